/* The loudness meter's per-sample work: BS.1770 K-weighting energies and the true peak.
 *
 * Why C: both are per-sample recursions or short convolutions that numpy cannot express
 * without ~10 ns per sample of temporaries; here they cost ~1-2 ns. Python keeps everything
 * else (coefficients, gating, pooling): see loudness.py. Only the stable ABI's buffer protocol
 * is used, so any NumPy array (or other buffer) of int16, int32 or float32 is accepted.
 *
 * kweight: libebur128's filter (direct form II, double state, the same coefficients, computed
 * by the caller), the sum of squares of the last `window` frames of every `step` frames.
 * true_peak: libebur128's polyphase interpolator (double accumulation, the result rounded to
 * float32), evaluated only on 16-frame chunks whose bound can beat the peak found so far.
 * segment_minmax: the waveform's per-segment max and min (peaks.py), both in one vectorised
 * pass, for the detail waveform's thousands of 256-frame points per block.
 *
 * Portable C with GCC vector extensions; on x86-64 GCC also emits AVX2/FMA and AVX-512
 * clones of the hot loops, chosen at load time for the CPU it runs on.
 */
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

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT_CLONES
#endif

/* ---- reading samples of any of the three types through the buffer's strides ---------- */

enum kind { KIND_INT16, KIND_INT32, KIND_FLOAT32 };

static int sample_kind(const Py_buffer *view, enum kind *out) {
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') {
        f++;
    }
    if (f[0] != '\0' && f[1] == '\0') {
        if (*f == 'h' && view->itemsize == 2) { *out = KIND_INT16; return 0; }
        if ((*f == 'i' || *f == 'l') && view->itemsize == 4) { *out = KIND_INT32; return 0; }
        if (*f == 'f' && view->itemsize == 4) { *out = KIND_FLOAT32; return 0; }
    }
    PyErr_Format(PyExc_TypeError, "samples must be int16, int32 or float32, not '%s'",
                 view->format ? view->format : "B");
    return -1;
}

/* One channel's samples (1-D, any stride) and their type; the buffer is released on error. */
static int get_channel(PyObject *obj, Py_buffer *view, enum kind *out) {
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    if (sample_kind(view, out) < 0 || view->ndim != 1) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "samples must be one channel (1-D)");
        }
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static inline double load(const char *p, enum kind k) {
    switch (k) {
    case KIND_INT16: { int16_t v; memcpy(&v, p, 2); return (double)v; }
    case KIND_INT32: { int32_t v; memcpy(&v, p, 4); return (double)v; }
    default: { float v; memcpy(&v, p, 4); return (double)v; }
    }
}

/* A writable, C-contiguous buffer of `count` doubles (or floats). */
static int get_out(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count,
                   const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (view->itemsize != itemsize || view->len < count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd items of %zd bytes", name, count, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Flush-to-zero while filtering, as libebur128 does: a decaying filter state would otherwise
 * spend thousands of samples in (slow) subnormal numbers after the audio falls silent. */
#if defined(__SSE2__)
#define FTZ_ON unsigned int saved_csr_ = _mm_getcsr(); _mm_setcsr(saved_csr_ | _MM_FLUSH_ZERO_ON);
#define FTZ_OFF _mm_setcsr(saved_csr_);
#else
#define FTZ_ON
#define FTZ_OFF
#endif

/* ---- K-weighting ------------------------------------------------------------------------ */

#define STATE 5 /* per channel: v1..v4 of the filter, the running sum of squares */
#define MAX_CHANNELS 64

/* Filters frames [0, n) of one channel; `count` says whether their squares are summed.
 * The recursion's critical path is one multiply-add per frame: the older terms are summed
 * first, the newest (a1 * v1) last. */
static inline __attribute__((always_inline)) void
filter_one(const char *p, Py_ssize_t s0, enum kind k, Py_ssize_t n, const double *co,
           double inv, double *st, int count) {
    const double b0 = co[0], b1 = co[1], b2 = co[2], b3 = co[3], b4 = co[4];
    const double a1 = co[5], a2 = co[6], a3 = co[7], a4 = co[8];
    double v1 = st[0], v2 = st[1], v3 = st[2], v4 = st[3], sum = st[4];
#pragma GCC unroll 4
    for (Py_ssize_t i = 0; i < n; i++, p += s0) {
        double x = load(p, k) * inv;
        double v0 = ((x - a4 * v4) - a3 * v3 - a2 * v2) - a1 * v1;
        double y = b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3 + b4 * v4;
        v4 = v3; v3 = v2; v2 = v1; v1 = v0;
        if (count) {
            sum += y * y;
        }
    }
    st[0] = v1; st[1] = v2; st[2] = v3; st[3] = v4; st[4] = sum;
}

/* The same for two channels at once, one in each lane of a 2-double vector: half the
 * instructions, the same arithmetic in each lane. */
typedef double pair __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) void
filter_two(const char *p, Py_ssize_t s0, Py_ssize_t s1, enum kind k, Py_ssize_t n,
           const double *co, double inv, double *st, int count) {
    const double b0 = co[0], b1 = co[1], b2 = co[2], b3 = co[3], b4 = co[4];
    const double a1 = co[5], a2 = co[6], a3 = co[7], a4 = co[8];
    pair v1 = {st[0], st[5]}, v2 = {st[1], st[6]}, v3 = {st[2], st[7]};
    pair v4 = {st[3], st[8]}, sum = {st[4], st[9]};
#pragma GCC unroll 4
    for (Py_ssize_t i = 0; i < n; i++, p += s0) {
        pair x = {load(p, k), load(p + s1, k)};
        x *= inv;
        pair v0 = ((x - a4 * v4) - a3 * v3 - a2 * v2) - a1 * v1;
        pair y = b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3 + b4 * v4;
        v4 = v3; v3 = v2; v2 = v1; v1 = v0;
        if (count) {
            sum += y * y;
        }
    }
    st[0] = v1[0]; st[1] = v2[0]; st[2] = v3[0]; st[3] = v4[0]; st[4] = sum[0];
    st[5] = v1[1]; st[6] = v2[1]; st[7] = v3[1]; st[8] = v4[1]; st[9] = sum[1];
}

/* Every weighted channel of one stretch, two at a time where two neighbours both count. */
HOT_CLONES static void filter_stretch(const char *base, Py_ssize_t s0, Py_ssize_t s1,
                                      enum kind k, Py_ssize_t n, int ch, const double *co,
                                      const double *weights, double inv, double *st,
                                      int count) {
    for (int c = 0; c < ch;) {
        const char *p = base + c * s1;
        double *sc = st + c * STATE;
        if (weights[c] == 0.0) {
            c++;
            continue;
        }
        int two = c + 1 < ch && weights[c + 1] != 0.0;
#define RUN(K)                                                                             \
        if (two) { if (count) filter_two(p, s0, s1, K, n, co, inv, sc, 1);                  \
                   else filter_two(p, s0, s1, K, n, co, inv, sc, 0); }                      \
        else { if (count) filter_one(p, s0, K, n, co, inv, sc, 1);                          \
               else filter_one(p, s0, K, n, co, inv, sc, 0); }
        switch (k) {
        case KIND_INT16: RUN(KIND_INT16) break;
        case KIND_INT32: RUN(KIND_INT32) break;
        default: RUN(KIND_FLOAT32) break;
        }
#undef RUN
        c += two ? 2 : 1;
    }
}

PyDoc_STRVAR(kweight_doc,
"kweight(samples, inv_scale, coeffs, weights, state, step, window, filled, energies)\n"
"-> (steps, filled)\n\n"
"K-weight the (frames, channels) block `samples`, each sample times `inv_scale`.\n"
"`coeffs`: b0..b4, a1..a4; `weights`: per channel (0: not filtered); `state`: channels x 5\n"
"doubles carried between blocks; `filled`: frames of the current step already seen. Each\n"
"completed step of `step` frames writes the weighted mean square of its last `window`\n"
"frames to `energies`; returns how many, and the frames filled in the step now open.");

static PyObject *kweight(PyObject *self, PyObject *args) {
    PyObject *samples_o, *coeffs_o, *weights_o, *state_o, *energies_o;
    double inv;
    Py_ssize_t step, window, filled;
    if (!PyArg_ParseTuple(args, "OdOOOnnnO", &samples_o, &inv, &coeffs_o, &weights_o, &state_o,
                          &step, &window, &filled, &energies_o)) {
        return NULL;
    }
    Py_buffer sv, cv, wv, stv, ev;
    enum kind k;
    if (PyObject_GetBuffer(samples_o, &sv, PyBUF_RECORDS_RO) < 0) {
        return NULL;
    }
    if (sample_kind(&sv, &k) < 0) {
        goto fail_samples;
    }
    if (sv.ndim != 2 || sv.shape[1] < 1 || sv.shape[1] > MAX_CHANNELS) {
        PyErr_SetString(PyExc_ValueError, "samples must be (frames, 1..64 channels)");
        goto fail_samples;
    }
    Py_ssize_t n = sv.shape[0];
    int ch = (int)sv.shape[1];
    if (step < 1 || window < 1 || window > step || filled < 0 || filled >= step) {
        PyErr_SetString(PyExc_ValueError, "need 1 <= window <= step and 0 <= filled < step");
        goto fail_samples;
    }
    Py_ssize_t steps_max = (filled + n) / step;
    if (PyObject_GetBuffer(coeffs_o, &cv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        goto fail_samples;
    }
    if (cv.itemsize != 8 || cv.len < 9 * 8) {
        PyErr_SetString(PyExc_ValueError, "coeffs: need 9 doubles");
        goto fail_coeffs;
    }
    if (PyObject_GetBuffer(weights_o, &wv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        goto fail_coeffs;
    }
    if (wv.itemsize != 8 || wv.len < ch * 8) {
        PyErr_SetString(PyExc_ValueError, "weights: need a double per channel");
        goto fail_weights;
    }
    if (get_out(state_o, &stv, 8, (Py_ssize_t)ch * STATE, "state") < 0) {
        goto fail_weights;
    }
    if (get_out(energies_o, &ev, 8, steps_max, "energies") < 0) {
        goto fail_state;
    }

    const double *co = cv.buf, *weights = wv.buf;
    double *st = stv.buf, *energies = ev.buf;
    const char *base = sv.buf;
    Py_ssize_t s0 = sv.strides[0], s1 = sv.strides[1], at = 0, done = 0;
    Py_BEGIN_ALLOW_THREADS
    FTZ_ON
    while (at < n) {
        Py_ssize_t quiet = step - window; /* frames of a step before its window */
        Py_ssize_t take;
        int count = filled >= quiet;
        take = count ? step - filled : quiet - filled;
        if (take > n - at) {
            take = n - at;
        }
        filter_stretch(base + at * s0, s0, s1, k, take, ch, co, weights, inv, st, count);
        at += take;
        filled += take;
        if (filled == step) {
            double sum = 0.0;
            for (int c = 0; c < ch; c++) {
                sum += st[c * STATE + 4] * weights[c];
                st[c * STATE + 4] = 0.0;
            }
            energies[done++] = sum / (double)window;
            filled = 0;
        }
    }
    for (int c = 0; c < ch * STATE; c++) { /* as libebur128 after every block */
        if (fabs(st[c]) < DBL_MIN) {
            st[c] = 0.0;
        }
    }
    FTZ_OFF
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&ev);
    PyBuffer_Release(&stv);
    PyBuffer_Release(&wv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&sv);
    return Py_BuildValue("nn", done, filled);

fail_state:
    PyBuffer_Release(&stv);
fail_weights:
    PyBuffer_Release(&wv);
fail_coeffs:
    PyBuffer_Release(&cv);
fail_samples:
    PyBuffer_Release(&sv);
    return NULL;
}

/* ---- true peak --------------------------------------------------------------------------- */

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

PyDoc_STRVAR(true_peak_doc,
"true_peak(samples, inv_scale, taps, history, peak) -> peak\n\n"
"The larger of `peak` and the largest |sample| and |interpolated value| of the 1-D\n"
"`samples` (each times `inv_scale`, as float32). `taps`: interpolator_taps(rate) (empty: the\n"
"sample peak only); `history`: float32, the taps - 1 samples before these (updated).");

static PyObject *true_peak(PyObject *self, PyObject *args) {
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
    if (get_channel(samples_o, &sv, &k) < 0) {
        return NULL;
    }
    int hist = ip.taps; /* one more than the window needs: the layout the meter keeps */
    if (get_out(history_o, &hv, 4, hist, "history") < 0) {
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

/* ---- segment min/max: numpy's maximum/minimum.reduceat in one pass ---------------------- */

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

static PyObject *segment_minmax(PyObject *self, PyObject *args) {
    PyObject *samples_o, *starts_o, *max_o, *min_o;
    if (!PyArg_ParseTuple(args, "OOOO", &samples_o, &starts_o, &max_o, &min_o)) {
        return NULL;
    }
    Py_buffer sv, tv, mv, nv;
    enum kind k;
    if (get_channel(samples_o, &sv, &k) < 0) {
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
    if (get_out(max_o, &mv, sv.itemsize, nseg, "max") < 0) {
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (get_out(min_o, &nv, sv.itemsize, nseg, "min") < 0) {
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

PyDoc_STRVAR(segment_minmax_doc,
"segment_minmax(samples, starts, out_max, out_min)\n\n"
"Maximum and minimum of samples[starts[j]:starts[j + 1]] (the last segment to the end) into\n"
"out_max[j] and out_min[j], of the samples' type; NaN propagates as in numpy.");

static PyMethodDef methods[] = {
    {"segment_minmax", segment_minmax, METH_VARARGS, segment_minmax_doc},
    {"kweight", kweight, METH_VARARGS, kweight_doc},
    {"true_peak", true_peak, METH_VARARGS, true_peak_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_loudness_kernel",
    "BS.1770 K-weighting energies and true peak, sample by sample (see loudness.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__loudness_kernel(void) {
    return PyModule_Create(&module);
}
