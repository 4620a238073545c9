/* What the kernel's files share: the Python C API under the stable ABI, the sample types a
 * buffer may hold, the buffer helpers, the CPU-dispatch and flush-to-zero macros, and the
 * three functions module.c exports (one file each: kweight.c, true_peak.c, segments.c).
 */
#ifndef WAVEFLOW_KERNEL_H
#define WAVEFLOW_KERNEL_H

#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030B0000
#include <Python.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* the vector helpers are inlined: no ABI crosses */
#endif

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The x86 code (AVX2/AVX-512 kernels, target clones, the SSE flush-to-zero): GCC on x86-64 Linux
 * only. Every other build, and one with -DWAVEFLOW_PORTABLE_KERNEL, compiles the plain-C paths
 * an aarch64 (Graviton) build runs, which is how the tests build and check them on x86. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&      \
    !defined(WAVEFLOW_PORTABLE_KERNEL)
#define WF_X86_SIMD 1
#endif

#ifdef WF_X86_SIMD
#include <xmmintrin.h>
#endif

#ifdef WF_X86_SIMD
#define HOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT_CLONES
#endif

enum kind { KIND_INT16, KIND_INT32, KIND_FLOAT32 };

/* The buffer's sample type (a TypeError otherwise). */
int wf_sample_kind(const Py_buffer *view, enum kind *out);
/* One channel's samples (1-D, any stride) and their type; the buffer is released on error. */
int wf_get_channel(PyObject *obj, Py_buffer *view, enum kind *out);
/* Segment starts for `n` frames: int64, the first 0, rising strictly inside the frames (a
 * ValueError otherwise); the buffer is released on error. */
int wf_get_starts(PyObject *obj, Py_buffer *view, Py_ssize_t n);
/* A writable, C-contiguous buffer of `count` items of `itemsize` bytes. */
int wf_get_out(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count,
               const char *name);

/* Flush-to-zero while filtering, as libebur128 does: a decaying filter state would otherwise
 * spend thousands of samples in (slow) subnormal numbers after the audio falls silent. */
#ifdef WF_X86_SIMD
#define FTZ_ON unsigned int saved_csr_ = _mm_getcsr(); _mm_setcsr(saved_csr_ | _MM_FLUSH_ZERO_ON);
#define FTZ_OFF _mm_setcsr(saved_csr_);
#else
#define FTZ_ON
#define FTZ_OFF
#endif

PyObject *wf_kweight(PyObject *self, PyObject *args);
PyObject *wf_true_peak(PyObject *self, PyObject *args);
PyObject *wf_segment_minmax(PyObject *self, PyObject *args);
extern const char wf_kweight_doc[], wf_true_peak_doc[], wf_segment_minmax_doc[];

/* segments.c: the detail waveform's points and the overview's segments in one pass. */
PyObject *wf_detail_minmax(PyObject *self, PyObject *args);
extern const char wf_detail_minmax_doc[];

/* segments.c: the waveform's levels (sum of squares, |mono| maximum per segment). */
PyObject *wf_levels(PyObject *self, PyObject *args);
extern const char wf_levels_doc[];

/* segments.c: an interleaved stereo block into two contiguous channels. */
PyObject *wf_split_stereo(PyObject *self, PyObject *args);
extern const char wf_split_stereo_doc[];

/* true_peak.c: what the true peak's first pass finds in each 256-frame block of a call (at
 * frame 256 b): the largest and smallest key (the sample, or a float's bits ordered as
 * integers) and the largest |second difference| in float32 centred on frames 256 b - 1 ..
 * 256 b + 254 (from frame 1 in the call's first block; to its end in a partial last one).
 * The detail pass computes them as it reads the samples (segments.c), and true_peak then
 * reads no sample for them again. */
#define WF_STAT_FRAMES 256
struct wf_block_stat {
    int32_t hi, lo;
    float curve;
};
/* Whether this CPU runs the true-peak kernel that reads them (AVX-512) and the detail pass
 * computes them. */
int wf_block_stats_available(void);
/* One block's stats, from its samples alone (the detail pass's points that are not in a run). */
void wf_block_stat(const void *base, Py_ssize_t at, Py_ssize_t len, enum kind k,
                   struct wf_block_stat *out);
PyObject *wf_peak_stats_available(PyObject *self, PyObject *args);
extern const char wf_peak_stats_available_doc[];

#endif
