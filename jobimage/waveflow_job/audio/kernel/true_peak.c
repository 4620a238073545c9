/* The true peak: libebur128's polyphase interpolator (double accumulation, the result rounded
 * to float32), evaluated only on 16-frame chunks whose bound can beat the peak found so far. */
#include "kernel.h"

#define CHUNK 16
#define SLICE 2048
#define MAX_TAPS 24
#define MAX_PHASES 3
/* The bound is computed in double from float32 samples; the interpolated values are rounded
 * to float32 afterwards: this slack covers that rounding. */
#define BOUND_SLACK (1.0 + 1e-6)

struct interpolator {
    int taps;   /* coefficients per phase, newest sample first */
    int phases; /* interpolated phases (the sample itself is phase 0, not among them) */
    double coeff[MAX_PHASES][MAX_TAPS];
    double sum[MAX_PHASES]; /* |sum of the phase's taps| */
    double abs[MAX_PHASES]; /* sum of |taps| */
    double sum_max, abs_max; /* the largest of each over the phases: the bound of all */
};

/* The largest |interpolated value| of the 16 frames at x[0..15] (x[-taps+1..-1] before them),
 * in vectors of `lanes` doubles (GCC vector extensions: native on every target that has them,
 * lowered to scalars elsewhere). `taps` and `phases` are known at compile time: one
 * multiply-add per tap and vector, summed from the newest sample to the oldest as libebur128
 * sums. */
#define DEFINE_CHUNK_PEAK(lanes)                                                           \
    typedef double vec##lanes __attribute__((vector_size(8 * (lanes))));                   \
    typedef long long mask##lanes __attribute__((vector_size(8 * (lanes))));               \
    static inline __attribute__((always_inline)) double                                    \
    chunk_peak##lanes(const double *x, const struct interpolator *ip, const int taps,      \
                      const int phases) {                                                  \
        enum { V = CHUNK / (lanes) };                                                      \
        vec##lanes top[V], sign;                                                           \
        for (int i = 0; i < (lanes); i++) {                                                \
            sign[i] = -0.0;                                                                \
        }                                                                                  \
        for (int v = 0; v < V; v++) {                                                      \
            top[v] = sign - sign;                                                          \
        }                                                                                  \
        for (int f = 0; f < phases; f++) {                                                 \
            vec##lanes acc[V];                                                             \
            for (int v = 0; v < V; v++) {                                                  \
                acc[v] = sign - sign;                                                      \
            }                                                                              \
            for (int t = 0; t < taps; t++) {                                               \
                const double c = ip->coeff[f][t];                                          \
                for (int v = 0; v < V; v++) {                                              \
                    vec##lanes xv;                                                         \
                    memcpy(&xv, x + v * (lanes) - t, sizeof xv);                           \
                    acc[v] += c * xv;                                                      \
                }                                                                          \
            }                                                                              \
            for (int v = 0; v < V; v++) {                                                  \
                vec##lanes a = (vec##lanes)((mask##lanes)acc[v] & ~(mask##lanes)sign);     \
                mask##lanes more = a > top[v];                                             \
                top[v] = (vec##lanes)(((mask##lanes)a & more) | ((mask##lanes)top[v] & ~more)); \
            }                                                                              \
        }                                                                                  \
        double m = 0.0;                                                                    \
        for (int v = 0; v < V; v++) {                                                      \
            for (int i = 0; i < (lanes); i++) {                                            \
                m = top[v][i] > m ? top[v][i] : m;                                         \
            }                                                                              \
        }                                                                                  \
        return m;                                                                          \
    }

DEFINE_CHUNK_PEAK(2)
DEFINE_CHUNK_PEAK(4)
DEFINE_CHUNK_PEAK(8)

/* Largest and smallest of the 16 samples at x (NaN never wins a comparison: ignored). */
#define DEFINE_EXTREMES(lanes)                                                             \
    static inline __attribute__((always_inline)) void                                      \
    extremes##lanes(const double *x, double *hi, double *lo) {                             \
        vec##lanes top, bottom;                                                            \
        memcpy(&top, x, sizeof top);                                                       \
        bottom = top;                                                                      \
        for (int v = 1; v < CHUNK / (lanes); v++) {                                        \
            vec##lanes xv;                                                                 \
            memcpy(&xv, x + v * (lanes), sizeof xv);                                       \
            mask##lanes more = xv > top, less = xv < bottom;                               \
            top = (vec##lanes)(((mask##lanes)xv & more) | ((mask##lanes)top & ~more));     \
            bottom = (vec##lanes)(((mask##lanes)xv & less) | ((mask##lanes)bottom & ~less)); \
        }                                                                                  \
        double h = top[0], l = bottom[0];                                                  \
        for (int i = 1; i < (lanes); i++) {                                                \
            h = top[i] > h ? top[i] : h;                                                   \
            l = bottom[i] < l ? bottom[i] : l;                                             \
        }                                                                                  \
        *hi = h;                                                                           \
        *lo = l;                                                                           \
    }

DEFINE_EXTREMES(2)
DEFINE_EXTREMES(4)
DEFINE_EXTREMES(8)

/* The interpolated peak of one partial chunk (the end of a block), frame by frame. */
static inline __attribute__((always_inline)) double
tail_peak(const double *x, Py_ssize_t len, const struct interpolator *ip, const int taps,
          const int phases) {
    double m = 0.0;
    for (Py_ssize_t i = 0; i < len; i++) {
        for (int f = 0; f < phases; f++) {
            double acc = 0.0;
            for (int t = 0; t < taps; t++) {
                acc += ip->coeff[f][t] * x[i - t];
            }
            acc = fabs(acc);
            m = acc > m ? acc : m;
        }
    }
    return m;
}

/* The peak over one slice: x[0..n) are the new samples, x[-taps..-1] the ones before.
 *
 * First the extremes of every 16-frame chunk (and the sample peak from them); a chunk's
 * windows reach back taps - 1 frames, into the chunk before it (4x) or the two before (2x),
 * or the history, so the union of those chunks' extremes bounds every value interpolated in
 * it. The chunk with the highest bound is interpolated first (it usually holds the slice's
 * peak), then every other chunk whose bound still beats the peak. */
static inline __attribute__((always_inline)) double
slice_peak(const double *x, Py_ssize_t n, const struct interpolator *ip, double peak,
           const int taps, const int phases, const int lanes) {
    enum { MAX_CHUNKS = SLICE / CHUNK };
    double hi[MAX_CHUNKS], lo[MAX_CHUNKS], bound[MAX_CHUNKS];
    Py_ssize_t chunks = (n + CHUNK - 1) / CHUNK, full = n / CHUNK;
    double top = 0.0;
    for (Py_ssize_t j = 0; j < chunks; j++) {
        if (j < full) {
            if (lanes == 8) extremes8(x + j * CHUNK, &hi[j], &lo[j]);
            else if (lanes == 4) extremes4(x + j * CHUNK, &hi[j], &lo[j]);
            else extremes2(x + j * CHUNK, &hi[j], &lo[j]);
        } else {
            double h = x[j * CHUNK], l = h;
            for (Py_ssize_t i = j * CHUNK + 1; i < n; i++) {
                h = x[i] > h ? x[i] : h;
                l = x[i] < l ? x[i] : l;
            }
            hi[j] = h;
            lo[j] = l;
        }
    }
    for (Py_ssize_t j = 0; j < chunks; j++) {
        top = hi[j] > top ? hi[j] : top;
        top = -lo[j] > top ? -lo[j] : top;
    }
    if (!(top <= peak)) { /* the sample peak (NaN samples never get this far) */
        peak = top;
    }
    double hist_hi = x[-taps], hist_lo = hist_hi;
    for (int i = -taps + 1; i < 0; i++) {
        hist_hi = x[i] > hist_hi ? x[i] : hist_hi;
        hist_lo = x[i] < hist_lo ? x[i] : hist_lo;
    }
    const int reach = taps > CHUNK ? 2 : 1; /* chunks a window reaches back into */
    Py_ssize_t best = 0;
    for (Py_ssize_t j = 0; j < chunks; j++) {
        double h = hi[j], l = lo[j];
        for (int back = 1; back <= reach; back++) {
            double bh = j >= back ? hi[j - back] : hist_hi, bl = j >= back ? lo[j - back] : hist_lo;
            h = bh > h ? bh : h;
            l = bl < l ? bl : l;
        }
        bound[j] = (fabs(h + l) * ip->sum_max + (h - l) * ip->abs_max) * (0.5 * BOUND_SLACK);
        best = bound[j] > bound[best] ? j : best;
    }
    for (Py_ssize_t k = -1; k < chunks; k++) {
        Py_ssize_t j = k < 0 ? best : k;
        if ((k >= 0 && j == best) || !(bound[j] > peak)) { /* NaN bounds never pass */
            continue;
        }
        const double *c = x + j * CHUNK;
        double m;
        if (j < full) {
            m = lanes == 8   ? chunk_peak8(c, ip, taps, phases)
                : lanes == 4 ? chunk_peak4(c, ip, taps, phases)
                             : chunk_peak2(c, ip, taps, phases);
        } else {
            m = tail_peak(c, n - j * CHUNK, ip, taps, phases);
        }
        double rounded = (double)(float)m;
        peak = rounded > peak ? rounded : peak;
    }
    return peak;
}

/* One function per interpolator (4x: 3 phases of 12 taps; 2x: 1 of 24) and vector width:
 * 2 doubles everywhere (SSE2, NEON), 4 with AVX2 and FMA, 8 with AVX-512. */
typedef double (*slice_fn)(const double *, Py_ssize_t, const struct interpolator *, double);

#define DEFINE_SLICE(name, taps, phases, lanes, target)                                    \
    target static double name(const double *xd, Py_ssize_t n, const struct interpolator *ip, \
                              double peak) {                                               \
        return slice_peak(xd, n, ip, peak, taps, phases, lanes);                           \
    }

DEFINE_SLICE(peak_4x_2, 12, 3, 2, )
DEFINE_SLICE(peak_2x_2, 24, 1, 2, )
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define X86_KERNELS 1
DEFINE_SLICE(peak_4x_4, 12, 3, 4, __attribute__((target("avx2,fma"))))
DEFINE_SLICE(peak_2x_4, 24, 1, 4, __attribute__((target("avx2,fma"))))
DEFINE_SLICE(peak_4x_8, 12, 3, 8, __attribute__((target("avx512f,fma"))))
DEFINE_SLICE(peak_2x_8, 24, 1, 8, __attribute__((target("avx512f,fma"))))
#endif

/* The widest kernel this CPU runs, for 3 phases (4x) or 1 (2x). */
static slice_fn slice_kernel(int phases) {
#ifdef X86_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
        return phases == 3 ? peak_4x_8 : peak_2x_8;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return phases == 3 ? peak_4x_4 : peak_2x_4;
    }
#endif
    return phases == 3 ? peak_4x_2 : peak_2x_2;
}

static int read_taps(PyObject *obj, struct interpolator *ip) {
    Py_buffer tv;
    if (PyObject_GetBuffer(obj, &tv, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    int ok = tv.itemsize == 8 && tv.ndim == 2 && tv.format && strchr(tv.format, 'd');
    Py_ssize_t rows = ok ? tv.shape[0] : 0, cols = ok ? tv.shape[1] : 0;
    ip->phases = (int)cols;
    ip->taps = (int)rows - 1;
    ok = ok && ((rows == 13 && cols == 3) || (rows == 25 && cols == 1) || rows == 0);
    if (ok && rows == 0) {
        ip->taps = ip->phases = 0;
    }
    for (int f = 0; ok && f < ip->phases; f++) {
        ip->sum[f] = ip->abs[f] = 0.0;
        for (Py_ssize_t t = 0; t < rows; t++) {
            double c;
            memcpy(&c, (const char *)tv.buf + t * tv.strides[0] + f * tv.strides[1], 8);
            if (t == rows - 1) {
                ok = c == 0.0; /* the last row only reaches phase 0, which is the sample */
                break;
            }
            ip->coeff[f][t] = c;
            ip->sum[f] += c;
            ip->abs[f] += fabs(c);
        }
        ip->sum[f] = fabs(ip->sum[f]);
    }
    ip->sum_max = ip->abs_max = 0.0;
    for (int f = 0; ok && f < ip->phases; f++) {
        ip->sum_max = ip->sum[f] > ip->sum_max ? ip->sum[f] : ip->sum_max;
        ip->abs_max = ip->abs[f] > ip->abs_max ? ip->abs[f] : ip->abs_max;
    }
    PyBuffer_Release(&tv);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "taps: expected interpolator_taps() of 4x or 2x");
        return -1;
    }
    return 0;
}

/* Samples as float32 at full scale 1.0, as libebur128 feeds its interpolator, held as double
 * for the multiply-adds; a loop per type, contiguous or strided. The scale is a power of two:
 * int16 samples (and float32 ones at scale 1) are then exact in float32 already. */
#define CONVERT(T, EXPR)                                                                   \
    do {                                                                                   \
        if (s0 == sizeof(T)) {                                                             \
            const T *src = (const T *)(const void *)p;                                     \
            for (Py_ssize_t i = 0; i < n; i++) {                                           \
                const double v = (double)src[i];                                           \
                x[i] = (EXPR);                                                             \
            }                                                                              \
        } else {                                                                           \
            for (Py_ssize_t i = 0; i < n; i++) {                                           \
                T raw;                                                                     \
                memcpy(&raw, p + i * s0, sizeof raw);                                      \
                const double v = (double)raw;                                              \
                x[i] = (EXPR);                                                             \
            }                                                                              \
        }                                                                                  \
    } while (0)

HOT_CLONES static void convert(const char *p, Py_ssize_t s0, enum kind k, Py_ssize_t n,
                               double inv, double *restrict x) {
    switch (k) {
    case KIND_INT16: CONVERT(int16_t, v * inv); break;
    case KIND_INT32: CONVERT(int32_t, (double)(float)(v * inv)); break;
    default:
        if (inv == 1.0) {
            CONVERT(float, v);
        } else {
            CONVERT(float, (double)(float)(v * inv));
        }
        break;
    }
}

const char wf_true_peak_doc[] =
"true_peak(samples, inv_scale, taps, history, peak) -> peak\n\n"
"The larger of `peak` and the largest |sample| and |interpolated value| of the 1-D\n"
"`samples` (each times `inv_scale`, as float32). `taps`: interpolator_taps(rate) (empty: the\n"
"sample peak only); `history`: float32, the taps - 1 samples before these (updated).";

PyObject *wf_true_peak(PyObject *self, PyObject *args) {
    PyObject *samples_o, *taps_o, *history_o;
    double inv, peak;
    if (!PyArg_ParseTuple(args, "OdOOd", &samples_o, &inv, &taps_o, &history_o, &peak)) {
        return NULL;
    }
    struct interpolator ip;
    if (read_taps(taps_o, &ip) < 0) {
        return NULL;
    }
    Py_buffer sv, hv;
    enum kind k;
    if (wf_get_channel(samples_o, &sv, &k) < 0) {
        return NULL;
    }
    int hist = ip.taps; /* one more than the window needs: the layout the meter keeps */
    if (wf_get_out(history_o, &hv, 4, hist, "history") < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = sv.shape[0], s0 = sv.strides[0];
    const char *base = sv.buf;
    float *history = hv.buf;
    slice_fn interpolate = ip.phases ? slice_kernel(ip.phases) : NULL;
    Py_BEGIN_ALLOW_THREADS
    double xd[MAX_TAPS + SLICE];
    double *x = xd + MAX_TAPS;
    for (int i = 0; i < hist; i++) {
        x[i - hist] = history[i];
    }
    for (Py_ssize_t at = 0; at < n; at += SLICE) {
        Py_ssize_t len = n - at < SLICE ? n - at : SLICE;
        convert(base + at * s0, s0, k, len, inv, x);
        if (!interpolate) {
            for (Py_ssize_t i = 0; i < len; i++) {
                double a = fabs(x[i]);
                peak = a > peak ? a : peak;
            }
        } else {
            peak = interpolate(x, len, &ip, peak);
        }
        /* the newest `hist` samples become the next slice's history (overlapping when the
         * slice is shorter than the history) */
        memmove(x - hist, x + len - hist, (size_t)hist * sizeof(double));
    }
    for (int i = 0; i < hist; i++) {
        history[i] = (float)x[i - hist];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hv);
    PyBuffer_Release(&sv);
    return PyFloat_FromDouble(peak);
}
