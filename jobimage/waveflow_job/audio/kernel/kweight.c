/* BS.1770 K-weighting: libebur128's filter (direct form II, double state, the coefficients
 * the caller computes as libebur128 does), the sum of squares of the last `window` frames of
 * every `step` frames. */
#include "kernel.h"

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

const char wf_kweight_doc[] =
"kweight(samples, inv_scale, coeffs, weights, state, step, window, filled, energies)\n"
"-> (steps, filled)\n\n"
"K-weight the (frames, channels) block `samples`, each sample times `inv_scale`.\n"
"`coeffs`: b0..b4, a1..a4; `weights`: per channel (0: not filtered); `state`: channels x 5\n"
"doubles carried between blocks; `filled`: frames of the current step already seen. Each\n"
"completed step of `step` frames writes the weighted mean square of its last `window`\n"
"frames to `energies`; returns how many, and the frames filled in the step now open.";

PyObject *wf_kweight(PyObject *self, PyObject *args) {
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
    if (wf_sample_kind(&sv, &k) < 0) {
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
    if (wf_get_out(state_o, &stv, 8, (Py_ssize_t)ch * STATE, "state") < 0) {
        goto fail_weights;
    }
    if (wf_get_out(energies_o, &ev, 8, steps_max, "energies") < 0) {
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
