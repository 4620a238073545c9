/* The waveform's per-segment max and min (peaks.py), both in one vectorised pass: numpy's
 * maximum/minimum.reduceat in one, for the detail waveform's thousands of 256-frame points per
 * block. */
#include "kernel.h"

/* One function per type, over contiguous samples (so GCC vectorises the inner loops) or any
 * stride; floats: a NaN anywhere makes both NaN, as np.maximum/np.minimum propagate it. */
#define SEGMENT_FN(NAME, T, NANCHECK)                                                      \
    HOT_CLONES static void NAME(const char *base, Py_ssize_t s0, Py_ssize_t n,             \
                                const int64_t *starts, Py_ssize_t nseg, T *mxo, T *mno) {  \
        const T *p = (const T *)base;                                                      \
        int unit = s0 == (Py_ssize_t)sizeof(T);                                            \
        for (Py_ssize_t j = 0; j < nseg; j++) {                                            \
            Py_ssize_t a = starts[j], b = j + 1 < nseg ? starts[j + 1] : n;                \
            T mx = *(const T *)(base + a * s0), mn = mx;                                   \
            int nan = 0;                                                                   \
            if (unit) {                                                                    \
                for (Py_ssize_t i = a; i < b; i++) {                                       \
                    T v = p[i];                                                            \
                    NANCHECK;                                                              \
                    mx = v > mx ? v : mx;                                                  \
                    mn = v < mn ? v : mn;                                                  \
                }                                                                          \
            } else {                                                                       \
                for (Py_ssize_t i = a; i < b; i++) {                                       \
                    T v = *(const T *)(base + i * s0);                                     \
                    NANCHECK;                                                              \
                    mx = v > mx ? v : mx;                                                  \
                    mn = v < mn ? v : mn;                                                  \
                }                                                                          \
            }                                                                              \
            mxo[j] = nan ? (T)NAN : mx;                                                    \
            mno[j] = nan ? (T)NAN : mn;                                                    \
        }                                                                                  \
    }

SEGMENT_FN(segment_int16, int16_t, (void)0)
SEGMENT_FN(segment_int32, int32_t, (void)0)
SEGMENT_FN(segment_float, float, nan |= v != v)

PyObject *wf_segment_minmax(PyObject *self, PyObject *args) {
    PyObject *samples_o, *starts_o, *max_o, *min_o;
    if (!PyArg_ParseTuple(args, "OOOO", &samples_o, &starts_o, &max_o, &min_o)) {
        return NULL;
    }
    Py_buffer sv, tv, mv, nv;
    enum kind k;
    if (wf_get_channel(samples_o, &sv, &k) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(starts_o, &tv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = sv.shape[0], s0 = sv.strides[0], nseg = tv.len / 8;
    const int64_t *starts = tv.buf;
    int bad = tv.itemsize != 8 || nseg < 1 || starts[0] != 0;
    for (Py_ssize_t j = 1; !bad && j < nseg; j++) {
        bad = starts[j] <= starts[j - 1] || starts[j] >= n;
    }
    if (bad || n < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "starts must be int64, begin at 0 and rise strictly inside the samples");
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (wf_get_out(max_o, &mv, sv.itemsize, nseg, "max") < 0) {
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (wf_get_out(min_o, &nv, sv.itemsize, nseg, "min") < 0) {
        PyBuffer_Release(&mv);
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    const char *base = sv.buf;
    Py_BEGIN_ALLOW_THREADS
    if (k == KIND_INT16) {
        segment_int16(base, s0, n, starts, nseg, mv.buf, nv.buf);
    } else if (k == KIND_INT32) {
        segment_int32(base, s0, n, starts, nseg, mv.buf, nv.buf);
    } else {
        segment_float(base, s0, n, starts, nseg, mv.buf, nv.buf);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&nv);
    PyBuffer_Release(&mv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&sv);
    Py_RETURN_NONE;
}

const char wf_segment_minmax_doc[] =
"segment_minmax(samples, starts, out_max, out_min)\n\n"
"Maximum and minimum of samples[starts[j]:starts[j + 1]] (the last segment to the end) into\n"
"out_max[j] and out_min[j], of the samples' type; NaN propagates as in numpy.";
