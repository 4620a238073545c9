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

/* The detail waveform's points and the overview's segments in one pass over a channel.
 *
 * The block is cut where either grid has an edge: the overview's segments (`starts`, a few per
 * block) and the detail's points (every `spp` frames from `first`, the block's first point
 * edge; the block's first and last points may be partial). Each piece's max and min fold into
 * both its point and its segment; a finished point is converted at once to audiowaveform's
 * stored integer, trunc(x * scale * top) clipped to [-top, top - 1] (exactly numpy's float64
 * arithmetic in detail.to_stored; the conversion is monotonic, so a point split over two
 * blocks folds its stored halves with max/min). Points go to `points[(p * stride) + 0/1]`
 * (min, max: the .dat's order), int8 or int16. */
static inline double stored(double v, double scale, double top) {
    double x = trunc(v * scale * top);
    if (!(x >= -top)) { /* NaN too: the caller refuses non-finite blocks before writing */
        x = -top;
    }
    return x > top - 1.0 ? top - 1.0 : x;
}

#define PIECE_LOOP(T, NANCHECK)                                                            \
    if (unit) {                                                                            \
        for (Py_ssize_t i = a; i < b; i++) {                                               \
            T v = p[i];                                                                    \
            NANCHECK;                                                                      \
            mx = v > mx ? v : mx;                                                          \
            mn = v < mn ? v : mn;                                                          \
        }                                                                                  \
    } else {                                                                               \
        for (Py_ssize_t i = a; i < b; i++) {                                               \
            T v = *(const T *)(base + i * s0);                                             \
            NANCHECK;                                                                      \
            mx = v > mx ? v : mx;                                                          \
            mn = v < mn ? v : mn;                                                          \
        }                                                                                  \
    }

#define DETAIL_FN(NAME, T, NANCHECK)                                                       \
    HOT_CLONES static void NAME(const char *base, Py_ssize_t s0, Py_ssize_t n,             \
                                const int64_t *starts, Py_ssize_t nseg, T *mxo, T *mno,    \
                                Py_ssize_t first, Py_ssize_t spp, double scale, double top, \
                                char *points, int wide, Py_ssize_t stride) {               \
        const T *p = (const T *)base;                                                      \
        int unit = s0 == (Py_ssize_t)sizeof(T);                                            \
        Py_ssize_t j = 0, k = 0, a = 0;                                                    \
        Py_ssize_t seg_end = nseg > 1 ? starts[1] : n;                                     \
        Py_ssize_t point_end = first > 0 ? first : spp;                                    \
        T smx = 0, smn = 0, pmx = 0, pmn = 0;                                              \
        int snan = 0, pnan = 0, sopen = 0, popen = 0;                                      \
        while (a < n) {                                                                    \
            Py_ssize_t b = seg_end < point_end ? seg_end : point_end;                      \
            b = b < n ? b : n;                                                             \
            T mx = *(const T *)(base + a * s0), mn = mx;                                   \
            int nan = 0;                                                                   \
            PIECE_LOOP(T, NANCHECK)                                                        \
            if (popen) {                                                                   \
                pmx = mx > pmx ? mx : pmx;                                                 \
                pmn = mn < pmn ? mn : pmn;                                                 \
                pnan |= nan;                                                               \
            } else {                                                                       \
                pmx = mx, pmn = mn, pnan = nan, popen = 1;                                 \
            }                                                                              \
            if (sopen) {                                                                   \
                smx = mx > smx ? mx : smx;                                                 \
                smn = mn < smn ? mn : smn;                                                 \
                snan |= nan;                                                               \
            } else {                                                                       \
                smx = mx, smn = mn, snan = nan, sopen = 1;                                 \
            }                                                                              \
            if (b == point_end || b == n) {                                                \
                double lo = stored(pnan ? (double)NAN : (double)pmn, scale, top);          \
                double hi = stored(pnan ? (double)NAN : (double)pmx, scale, top);          \
                if (wide) {                                                                \
                    int16_t *q = (int16_t *)points + k * stride;                           \
                    q[0] = (int16_t)lo, q[1] = (int16_t)hi;                                \
                } else {                                                                   \
                    int8_t *q = (int8_t *)points + k * stride;                             \
                    q[0] = (int8_t)lo, q[1] = (int8_t)hi;                                  \
                }                                                                          \
                k++, popen = 0, point_end += spp;                                          \
            }                                                                              \
            if (b == seg_end || b == n) {                                                  \
                mxo[j] = snan ? (T)NAN : smx;                                              \
                mno[j] = snan ? (T)NAN : smn;                                              \
                j++, sopen = 0;                                                            \
                seg_end = j + 1 < nseg ? starts[j + 1] : n;                                \
            }                                                                              \
            a = b;                                                                         \
        }                                                                                  \
    }

DETAIL_FN(detail_int16, int16_t, (void)0)
DETAIL_FN(detail_int32, int32_t, (void)0)
DETAIL_FN(detail_float, float, nan |= v != v)

PyObject *wf_detail_minmax(PyObject *self, PyObject *args) {
    PyObject *samples_o, *starts_o, *max_o, *min_o, *points_o;
    Py_ssize_t first, spp, channel, channels;
    double scale;
    int bits;
    if (!PyArg_ParseTuple(args, "OOOOnndiOnn", &samples_o, &starts_o, &max_o, &min_o, &first,
                          &spp, &scale, &bits, &points_o, &channel, &channels)) {
        return NULL;
    }
    if (spp < 1 || first < 0 || first >= spp || (bits != 8 && bits != 16) || channels < 1 ||
        channel < 0 || channel >= channels) {
        PyErr_SetString(PyExc_ValueError,
                        "need 0 <= first < spp, bits 8 or 16 and 0 <= channel < channels");
        return NULL;
    }
    Py_buffer sv, tv, mv, nv, pv;
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
    /* Points the block touches: the partial one before `first`, then one per spp frames. */
    Py_ssize_t npoints = (first > 0) + (n - first + spp - 1) / spp;
    if (first >= n) {
        npoints = 1;
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
    Py_ssize_t width = bits / 8, stride = 2 * channels;
    if (wf_get_out(points_o, &pv, width, npoints * stride, "points") < 0) {
        PyBuffer_Release(&nv);
        PyBuffer_Release(&mv);
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    const char *base = sv.buf;
    char *points = (char *)pv.buf + channel * 2 * width;
    double top = (double)(1 << (bits - 1));
    int wide = bits == 16;
    Py_BEGIN_ALLOW_THREADS
    if (k == KIND_INT16) {
        detail_int16(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride);
    } else if (k == KIND_INT32) {
        detail_int32(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride);
    } else {
        detail_float(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&pv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&mv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&sv);
    return PyLong_FromSsize_t(npoints);
}

const char wf_detail_minmax_doc[] =
"detail_minmax(samples, starts, out_max, out_min, first, spp, scale, bits, points, channel,\n"
"              channels) -> number of points\n\n"
"segment_minmax's out_max/out_min, and in the same pass the detail waveform's points: every\n"
"spp frames from `first` (the block's first point edge, 0 <= first < spp; a partial point\n"
"before it), min and max as audiowaveform stores them at `bits`, trunc(x * scale * 2**(bits-1))\n"
"clipped, into points[p, channel, 0/1] of a C-contiguous (points, channels, 2) int8/int16 array.";
