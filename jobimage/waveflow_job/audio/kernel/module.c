/* waveflow_job.audio._kernel: the analysis's per-sample work, where numpy would be too slow.
 *
 * Why C: both are per-sample recursions or short convolutions that numpy cannot express
 * without ~10 ns per sample of temporaries; here they cost ~1-2 ns. Python keeps everything
 * else (coefficients, gating, pooling): see loudness.py. Only the stable ABI's buffer protocol
 * is used, so any NumPy array (or other buffer) of int16, int32 or float32 is accepted.
 *
 * kweight: libebur128's filter (direct form II, double state, the same coefficients, computed
 * by the caller; its output formed as y / b0, see kweight.c's filter_form), the sum of squares
 * of the last `window` frames of every `step` frames.
 * true_peak: libebur128's polyphase interpolator (double accumulation, the result rounded to
 * float32), evaluated only where a bound can beat the peak found so far: on the 256-frame
 * blocks whose range and curvature bounds (from the raw samples) do, then on the 16-frame chunks
 * of those whose own bounds still do.
 * segment_minmax: the waveform's per-segment max and min (peaks.py), both in one vectorised
 * pass; detail_minmax: the same, and in that pass the detail waveform's points (detail.py),
 * already as the .dat's stored integers.
 *
 * Portable C with GCC vector extensions; on x86-64 GCC also emits AVX2/FMA and AVX-512
 * clones of the hot loops, chosen at load time for the CPU it runs on.
 */
#include "kernel.h"

static PyMethodDef methods[] = {
    {"segment_minmax", wf_segment_minmax, METH_VARARGS, wf_segment_minmax_doc},
    {"kweight", wf_kweight, METH_VARARGS, wf_kweight_doc},
    {"true_peak", wf_true_peak, METH_VARARGS, wf_true_peak_doc},
    {"detail_minmax", wf_detail_minmax, METH_VARARGS, wf_detail_minmax_doc},
    {"levels", wf_levels, METH_VARARGS, wf_levels_doc},
    {"split_stereo", wf_split_stereo, METH_VARARGS, wf_split_stereo_doc},
    {"peak_stats_available", wf_peak_stats_available, METH_NOARGS, wf_peak_stats_available_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel",
    "The audio analysis's per-sample work: K-weighting energies, true peak, segment min/max.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) {
    return PyModule_Create(&module);
}
