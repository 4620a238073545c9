/* The waveform's per-segment max and min (peaks.py), both in one vectorised pass: numpy's
 * maximum/minimum.reduceat in one, for the detail waveform's thousands of 256-frame points per
 * block. */
#include "kernel.h"

/* Max and min of frames [a, b) into mx/mn (started from a sample of the range): unit-stride
 * samples through `p` (so GCC vectorises), any other stride through `base` and `s0`. */
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
            PIECE_LOOP(T, NANCHECK)                                                        \
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
    if (wf_get_starts(starts_o, &tv, sv.shape[0]) < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = sv.shape[0], s0 = sv.strides[0], nseg = tv.len / 8;
    const int64_t *starts = tv.buf;
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
 * blocks folds its stored halves with max/min: with `merge`, into the half the previous block
 * left in points[0]). Points go to `points[(p * stride) + 0/1]` (min, max: the .dat's order),
 * int8 or int16. */
static inline double stored(double v, double scale, double top) {
    double x = trunc(v * scale * top);
    if (!(x >= -top)) { /* NaN too: the caller refuses non-finite blocks before writing */
        x = -top;
    }
    return x > top - 1.0 ? top - 1.0 : x;
}

/* Runs of whole points (AVX2): most of a block's points lie whole inside one overview segment,
 * and there the per-point work, not the samples, made the detail dearer than segment_minmax
 * (perf: a third of its time in each point's two horizontal reductions and two scalar
 * conversions). Here eight points at a time: each point's samples fold into one vector of max
 * and one of min (as the piece loop's, unit stride), the eight vectors are reduced together
 * (lane k of the result is point k: 3 levels of unpack + max instead of 8 separate
 * reductions), and the eight minima and maxima convert to the stored integers as vectors, with
 * stored()'s exact double arithmetic (trunc(v * scale * top), then clipped; max_pd(x, -top)
 * gives -top for a NaN as stored() does). Float points holding a NaN come out as stored(NaN)
 * (the caller refuses such a block anyway). Each run also returns its max, min and NaN flag
 * for the segment it lies in. */
#ifdef WF_X86_SIMD
#include <immintrin.h>
#define RUN_TARGET __attribute__((target("avx2")))
#define RUN_GROUP 8

static int have_avx2 = -1;

static int runs_available(void) {
    if (have_avx2 < 0) {
        __builtin_cpu_init();
        have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have_avx2;
}

/* Lane k: the max (min) of vector k's lanes, for 8 vectors of 8 int32 lanes. */
#define FOLD8_32(OP, CAST, UNLO, UNHI, UNLO64, UNHI64, PERM)                              \
    do {                                                                                   \
        for (int i = 0; i < 4; i++) {                                                      \
            v[i] = OP(UNLO(v[2 * i], v[2 * i + 1]), UNHI(v[2 * i], v[2 * i + 1]));           \
        }                                                                                  \
        for (int i = 0; i < 2; i++) {                                                      \
            v[i] = OP(UNLO64(v[2 * i], v[2 * i + 1]), UNHI64(v[2 * i], v[2 * i + 1]));       \
        }                                                                                  \
        v[0] = OP(PERM(v[0], v[1], 0x20), PERM(v[0], v[1], 0x31));                         \
    } while (0)

static inline RUN_TARGET __m256i fold8_max_epi32(__m256i *v) {
    FOLD8_32(_mm256_max_epi32, , _mm256_unpacklo_epi32, _mm256_unpackhi_epi32,
             _mm256_unpacklo_epi64, _mm256_unpackhi_epi64, _mm256_permute2x128_si256);
    return v[0];
}

static inline RUN_TARGET __m256i fold8_min_epi32(__m256i *v) {
    FOLD8_32(_mm256_min_epi32, , _mm256_unpacklo_epi32, _mm256_unpackhi_epi32,
             _mm256_unpacklo_epi64, _mm256_unpackhi_epi64, _mm256_permute2x128_si256);
    return v[0];
}

#define UNLO64_PS(a, b) _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
#define UNHI64_PS(a, b) _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))

static inline RUN_TARGET __m256 fold8_max_ps(__m256 *v) {
    FOLD8_32(_mm256_max_ps, , _mm256_unpacklo_ps, _mm256_unpackhi_ps, UNLO64_PS, UNHI64_PS,
             _mm256_permute2f128_ps);
    return v[0];
}

static inline RUN_TARGET __m256 fold8_min_ps(__m256 *v) {
    FOLD8_32(_mm256_min_ps, , _mm256_unpacklo_ps, _mm256_unpackhi_ps, UNLO64_PS, UNHI64_PS,
             _mm256_permute2f128_ps);
    return v[0];
}

/* Lane k (of 8 int16 lanes): the max (min) of vector k's 16 lanes, for 8 vectors. */
#define FOLD8_16(OP, OP128)                                                                \
    do {                                                                                   \
        for (int i = 0; i < 4; i++) {                                                      \
            v[i] = OP(_mm256_unpacklo_epi16(v[2 * i], v[2 * i + 1]),                       \
                      _mm256_unpackhi_epi16(v[2 * i], v[2 * i + 1]));                      \
        }                                                                                  \
        for (int i = 0; i < 2; i++) {                                                      \
            v[i] = OP(_mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]),                       \
                      _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]));                      \
        }                                                                                  \
        v[0] = OP(_mm256_unpacklo_epi64(v[0], v[1]), _mm256_unpackhi_epi64(v[0], v[1]));   \
        return OP128(_mm256_castsi256_si128(v[0]), _mm256_extracti128_si256(v[0], 1));     \
    } while (0)

static inline RUN_TARGET __m128i fold8_max_epi16(__m256i *v) {
    FOLD8_16(_mm256_max_epi16, _mm_max_epi16);
}

static inline RUN_TARGET __m128i fold8_min_epi16(__m256i *v) {
    FOLD8_16(_mm256_min_epi16, _mm_min_epi16);
}

/* Four values (double lanes) as stored(): trunc(v * scale * top) within [-top, top - 1]. */
static inline RUN_TARGET __m128i stored4(__m256d v, __m256d scale, __m256d top, __m256d low,
                                         __m256d high) {
    __m256d x = _mm256_mul_pd(_mm256_mul_pd(v, scale), top);
    x = _mm256_round_pd(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    x = _mm256_min_pd(_mm256_max_pd(x, low), high);
    return _mm256_cvttpd_epi32(x);
}

/* Eight points' minima and maxima (int32 lanes, or doubles' sources) into the .dat's order. */
struct run_out {
    double scale, top;
    char *points;
    int wide;
    Py_ssize_t stride;
};

static inline RUN_TARGET void store8(const struct run_out *o, Py_ssize_t k, __m256d lo0,
                                     __m256d lo1, __m256d hi0, __m256d hi1, int nanmask) {
    __m256d scale = _mm256_set1_pd(o->scale), top = _mm256_set1_pd(o->top);
    __m256d low = _mm256_set1_pd(-o->top), high = _mm256_set1_pd(o->top - 1.0);
    int32_t lo[8], hi[8];
    _mm_storeu_si128((__m128i *)lo, stored4(lo0, scale, top, low, high));
    _mm_storeu_si128((__m128i *)(lo + 4), stored4(lo1, scale, top, low, high));
    _mm_storeu_si128((__m128i *)hi, stored4(hi0, scale, top, low, high));
    _mm_storeu_si128((__m128i *)(hi + 4), stored4(hi1, scale, top, low, high));
    for (int i = 0; nanmask && i < 8; i++) {
        if (nanmask >> i & 1) {
            lo[i] = hi[i] = (int32_t)-o->top; /* stored(NaN) */
        }
    }
    if (o->wide) {
        int16_t *q = (int16_t *)o->points + k * o->stride;
        for (int i = 0; i < 8; i++, q += o->stride) {
            q[0] = (int16_t)lo[i], q[1] = (int16_t)hi[i];
        }
    } else {
        int8_t *q = (int8_t *)o->points + k * o->stride;
        for (int i = 0; i < 8; i++, q += o->stride) {
            q[0] = (int8_t)lo[i], q[1] = (int8_t)hi[i];
        }
    }
}

/* store8 of 8 points' int32 minima and maxima. */
static inline RUN_TARGET void store8_epi32(const struct run_out *o, Py_ssize_t k, __m256i lo,
                                           __m256i hi) {
    store8(o, k, _mm256_cvtepi32_pd(_mm256_castsi256_si128(lo)),
           _mm256_cvtepi32_pd(_mm256_extracti128_si256(lo, 1)),
           _mm256_cvtepi32_pd(_mm256_castsi256_si128(hi)),
           _mm256_cvtepi32_pd(_mm256_extracti128_si256(hi, 1)), 0);
}

/* The largest of hi's 8 int32 lanes and the smallest of lo's (an integer run's own). */
static inline RUN_TARGET void lanes_extremes(__m256i hi, __m256i lo, int32_t *mx, int32_t *mn) {
    int32_t a[8], b[8];
    _mm256_storeu_si256((__m256i *)a, hi);
    _mm256_storeu_si256((__m256i *)b, lo);
    *mx = a[0], *mn = b[0];
    for (int i = 1; i < 8; i++) {
        *mx = a[i] > *mx ? a[i] : *mx;
        *mn = b[i] < *mn ? b[i] : *mn;
    }
}

/* store8 of 8 points' float minima and maxima. */
static inline RUN_TARGET void store8_ps(const struct run_out *o, Py_ssize_t k, __m256 lo,
                                        __m256 hi, int nanmask) {
    store8(o, k, _mm256_cvtps_pd(_mm256_castps256_ps128(lo)),
           _mm256_cvtps_pd(_mm256_extractf128_ps(lo, 1)),
           _mm256_cvtps_pd(_mm256_castps256_ps128(hi)),
           _mm256_cvtps_pd(_mm256_extractf128_ps(hi, 1)), nanmask);
}

/* The largest of gh's lanes and the smallest of gl's (a float run's own max and min). */
static inline RUN_TARGET void lanes_minmax_ps(__m256 gh, __m256 gl, float *mx, float *mn) {
    float a[8], b[8];
    _mm256_storeu_ps(a, gh);
    _mm256_storeu_ps(b, gl);
    *mx = a[0], *mn = b[0];
    for (int i = 1; i < 8; i++) {
        *mx = a[i] > *mx ? a[i] : *mx;
        *mn = b[i] < *mn ? b[i] : *mn;
    }
}

/* `groups` x 8 whole points of `spp` frames (a multiple of the lanes) from p, written from point
 * k on; the run's max and min into smx and smn (and for floats whether it holds a NaN). */
static RUN_TARGET void run_int32(const int32_t *p, Py_ssize_t spp, Py_ssize_t groups,
                                 const struct run_out *o, Py_ssize_t k, int32_t *smx,
                                 int32_t *smn, int *snan) {
    __m256i gh = _mm256_set1_epi32(INT32_MIN), gl = _mm256_set1_epi32(INT32_MAX);
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * spp, k += RUN_GROUP) {
        __m256i h[RUN_GROUP], l[RUN_GROUP];
        for (int j = 0; j < RUN_GROUP; j++) {
            const int32_t *q = p + j * spp;
            __m256i mx = _mm256_loadu_si256((const __m256i *)q), mn = mx;
            for (Py_ssize_t i = 8; i < spp; i += 8) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(q + i));
                mx = _mm256_max_epi32(mx, x);
                mn = _mm256_min_epi32(mn, x);
            }
            h[j] = mx, l[j] = mn;
        }
        __m256i hi = fold8_max_epi32(h), lo = fold8_min_epi32(l);
        gh = _mm256_max_epi32(gh, hi), gl = _mm256_min_epi32(gl, lo);
        store8_epi32(o, k, lo, hi);
    }
    lanes_extremes(gh, gl, smx, smn);
    *snan = 0;
}

static RUN_TARGET void run_int16(const int16_t *p, Py_ssize_t spp, Py_ssize_t groups,
                                 const struct run_out *o, Py_ssize_t k, int16_t *smx,
                                 int16_t *smn, int *snan) {
    __m128i gh = _mm_set1_epi16(INT16_MIN), gl = _mm_set1_epi16(INT16_MAX);
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * spp, k += RUN_GROUP) {
        __m256i h[RUN_GROUP], l[RUN_GROUP];
        for (int j = 0; j < RUN_GROUP; j++) {
            const int16_t *q = p + j * spp;
            __m256i mx = _mm256_loadu_si256((const __m256i *)q), mn = mx;
            for (Py_ssize_t i = 16; i < spp; i += 16) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(q + i));
                mx = _mm256_max_epi16(mx, x);
                mn = _mm256_min_epi16(mn, x);
            }
            h[j] = mx, l[j] = mn;
        }
        __m128i hi = fold8_max_epi16(h), lo = fold8_min_epi16(l);
        gh = _mm_max_epi16(gh, hi), gl = _mm_min_epi16(gl, lo);
        __m256i lo32 = _mm256_cvtepi16_epi32(lo), hi32 = _mm256_cvtepi16_epi32(hi);
        store8_epi32(o, k, lo32, hi32);
    }
    int32_t mx, mn;
    lanes_extremes(_mm256_cvtepi16_epi32(gh), _mm256_cvtepi16_epi32(gl), &mx, &mn);
    *smx = (int16_t)mx, *smn = (int16_t)mn, *snan = 0;
}

static RUN_TARGET void run_float(const float *p, Py_ssize_t spp, Py_ssize_t groups,
                                 const struct run_out *o, Py_ssize_t k, float *smx, float *smn,
                                 int *snan) {
    __m256 gh = _mm256_set1_ps(-INFINITY), gl = _mm256_set1_ps(INFINITY);
    int nan = 0;
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * spp, k += RUN_GROUP) {
        __m256 h[RUN_GROUP], l[RUN_GROUP];
        int nanmask = 0;
        for (int j = 0; j < RUN_GROUP; j++) {
            const float *q = p + j * spp;
            __m256 mx = _mm256_loadu_ps(q), mn = mx;
            __m256 bad = _mm256_cmp_ps(mx, mx, _CMP_UNORD_Q);
            for (Py_ssize_t i = 8; i < spp; i += 8) {
                __m256 x = _mm256_loadu_ps(q + i);
                mx = _mm256_max_ps(x, mx); /* x > mx ? x : mx, as the piece loop */
                mn = _mm256_min_ps(x, mn);
                bad = _mm256_or_ps(bad, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
            }
            h[j] = mx, l[j] = mn;
            nanmask |= (_mm256_movemask_ps(bad) != 0) << j;
        }
        __m256 hi = fold8_max_ps(h), lo = fold8_min_ps(l);
        gh = _mm256_max_ps(hi, gh), gl = _mm256_min_ps(lo, gl);
        nan |= nanmask;
        store8_ps(o, k, lo, hi, nanmask);
    }
    lanes_minmax_ps(gh, gl, smx, smn);
    *snan = nan != 0;
}


/* Runs that also give the true peak's block stats (kernel.h's wf_block_stat), one per point:
 * with 256 frames per point from the block's start, a point is a block of the true peak's, so
 * its extremes and its largest |second difference| come from the samples the detail reads
 * anyway, in the same pass (AVX-512, 16 lanes: each point's vectors folded to 8 lanes, then as
 * the runs above). The second differences as true_peak.c's block_scan16 computes them (each
 * sample converted to float32 once, its two predecessors shifted in from the vector before,
 * the outer two summed, then minus twice the middle one): the same float32 values, so the same
 * maximum. A run from the block's first frame leaves out centres -1 and 0 (the true peak
 * measures the call's first block from centre 1). */
#define STAT_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define STAT_POINT 256

static inline STAT_TARGET __m256i half_max_epi32(__m512i v) {
    return _mm256_max_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

static inline STAT_TARGET __m256i half_min_epi32(__m512i v) {
    return _mm256_min_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

static inline STAT_TARGET __m256i half_max_epu32(__m512i v) {
    return _mm256_max_epu32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

static inline STAT_TARGET __m256 half_max_ps(__m512 v) {
    return _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

static inline STAT_TARGET __m256 half_min_ps(__m512 v) {
    return _mm256_min_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

static inline RUN_TARGET __m256i fold8_max_epu32(__m256i *v) {
    FOLD8_32(_mm256_max_epu32, , _mm256_unpacklo_epi32, _mm256_unpackhi_epi32,
             _mm256_unpacklo_epi64, _mm256_unpackhi_epi64, _mm256_permute2x128_si256);
    return v[0];
}

/* The largest |second difference| so far, with the 16 centred on prev's last lane and cur's
 * first 15 (only the lanes in `keep`). */
static inline STAT_TARGET __m512 curve_step(__m512 m, __m512 prev, __m512 cur, __mmask16 keep) {
    __m512 back1 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 15));
    __m512 back2 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 14));
    __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(-2.0f), back1, _mm512_add_ps(back2, cur));
    return _mm512_mask_max_ps(m, keep, m, _mm512_abs_ps(d));
}

/* true_peak.c's float_key, 8 lanes: a float's bits with a negative one's magnitude bits
 * flipped, so that keys order as the floats do (and back: a key is its own inverse). */
static inline STAT_TARGET __m256i float_key8(__m256i bits) {
    return _mm256_xor_si256(bits, _mm256_srli_epi32(_mm256_srai_epi32(bits, 31), 1));
}

/* Lane by lane b where the sign of `sign` is set, else a. */
static inline STAT_TARGET __m256i blend_by_sign(__m256i a, __m256i b, __m256i sign) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b),
                                                _mm256_castsi256_ps(sign)));
}

/* Eight points' stats, lane i for point i. */
static inline STAT_TARGET void put_stats(struct wf_block_stat *st, __m256i hi, __m256i lo,
                                         __m256 curve) {
    int32_t h[8], l[8];
    float c[8];
    _mm256_storeu_si256((__m256i *)h, hi);
    _mm256_storeu_si256((__m256i *)l, lo);
    _mm256_storeu_ps(c, curve);
    for (int i = 0; i < 8; i++) {
        st[i].hi = h[i], st[i].lo = l[i], st[i].curve = c[i];
    }
}

/* As run_int32 with spp 256, and each point's stats into st[0..]; `at_start`: the run begins
 * at the block's first frame (else p[-16..-1] are the block's too). */
static STAT_TARGET __attribute__((noinline)) void
stats_run_int32(const int32_t *p, Py_ssize_t groups, const struct run_out *o, Py_ssize_t k,
                int32_t *smx, int32_t *smn, int *snan, struct wf_block_stat *st, int at_start) {
    __m256i gh = _mm256_set1_epi32(INT32_MIN), gl = _mm256_set1_epi32(INT32_MAX);
    __m512 prev = at_start ? _mm512_setzero_ps() : _mm512_cvtepi32_ps(_mm512_loadu_si512(p - 16));
    __mmask16 keep = at_start ? 0xfffc : 0xffff;
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * STAT_POINT, k += RUN_GROUP) {
        __m256i h[RUN_GROUP], l[RUN_GROUP];
        __m256 c[RUN_GROUP];
        for (int j = 0; j < RUN_GROUP; j++) {
            const int32_t *q = p + j * STAT_POINT;
            __m512i mx = _mm512_set1_epi32(INT32_MIN), mn = _mm512_set1_epi32(INT32_MAX);
            __m512 m = _mm512_setzero_ps();
            for (int v = 0; v < STAT_POINT / 16; v++) {
                __m512i x = _mm512_loadu_si512(q + 16 * v);
                mx = _mm512_max_epi32(mx, x);
                mn = _mm512_min_epi32(mn, x);
                __m512 cur = _mm512_cvtepi32_ps(x);
                m = curve_step(m, prev, cur, keep);
                prev = cur, keep = 0xffff;
            }
            h[j] = half_max_epi32(mx), l[j] = half_min_epi32(mn), c[j] = half_max_ps(m);
        }
        __m256i hi = fold8_max_epi32(h), lo = fold8_min_epi32(l);
        put_stats(st + k, hi, lo, fold8_max_ps(c));
        gh = _mm256_max_epi32(gh, hi), gl = _mm256_min_epi32(gl, lo);
        store8_epi32(o, k, lo, hi);
    }
    lanes_extremes(gh, gl, smx, smn);
    *snan = 0;
}

/* int16: the second differences are exact integers (|d| <= 131,070; float32 holds them, so
 * they equal block_scan16's), computed 32 centres at a time with multiply-adds of sample
 * pairs: centres q = s0 + 2i from the pairs (x[q-1], x[q]) times (1, -2) plus x[q+1] times 1,
 * centres s0 + 2i + 1 likewise from the pairs one sample on. Masked loads read nothing before
 * the block's first frame or past a point's last. */
static STAT_TARGET __attribute__((noinline)) void
stats_run_int16(const int16_t *p, Py_ssize_t groups, const struct run_out *o, Py_ssize_t k,
                int16_t *smx, int16_t *smn, int *snan, struct wf_block_stat *st, int at_start) {
    __m128i gh = _mm_set1_epi16(INT16_MIN), gl = _mm_set1_epi16(INT16_MAX);
    const __m512i near = _mm512_set1_epi32((int32_t)0xfffe0001); /* (1, -2) */
    const __m512i far = _mm512_set1_epi32(1);                    /* (1, 0) */
    /* the block's first centres, -1 and 0, are left out (lane 0 of both halves) */
    __mmask32 back2 = at_start ? 0xfffffffcu : ~0u, back1 = at_start ? 0xfffffffeu : ~0u;
    __mmask16 keep = at_start ? 0xfffe : 0xffff;
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * STAT_POINT, k += RUN_GROUP) {
        __m256i h[RUN_GROUP], l[RUN_GROUP], c[RUN_GROUP];
        for (int j = 0; j < RUN_GROUP; j++) {
            const int16_t *q = p + j * STAT_POINT;
            __m512i mx = _mm512_set1_epi16(INT16_MIN), mn = _mm512_set1_epi16(INT16_MAX);
            __m512i m = _mm512_setzero_si512();
            for (int v = 0; v < STAT_POINT / 32; v++) {
                const int16_t *s0 = q + 32 * v - 1; /* the first of the 32 centres */
                __m512i pe = _mm512_maskz_loadu_epi16(back2, s0 - 1);
                __m512i po = _mm512_maskz_loadu_epi16(back1, s0);
                __m512i x = _mm512_loadu_si512(s0 + 1); /* the point's own 32 samples */
                __m512i next = _mm512_maskz_loadu_epi16(0x7fffffffu, s0 + 2);
                mx = _mm512_max_epi16(mx, x);
                mn = _mm512_min_epi16(mn, x);
                __m512i even = _mm512_add_epi32(_mm512_madd_epi16(pe, near),
                                                _mm512_madd_epi16(x, far));
                __m512i odd = _mm512_add_epi32(_mm512_madd_epi16(po, near),
                                               _mm512_madd_epi16(next, far));
                m = _mm512_mask_max_epi32(m, keep, m, _mm512_abs_epi32(even));
                m = _mm512_mask_max_epi32(m, keep, m, _mm512_abs_epi32(odd));
                back2 = back1 = ~0u, keep = 0xffff;
            }
            h[j] = _mm256_max_epi16(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
            l[j] = _mm256_min_epi16(_mm512_castsi512_si256(mn), _mm512_extracti64x4_epi64(mn, 1));
            c[j] = half_max_epi32(m);
        }
        __m128i hi = fold8_max_epi16(h), lo = fold8_min_epi16(l);
        __m256i lo32 = _mm256_cvtepi16_epi32(lo), hi32 = _mm256_cvtepi16_epi32(hi);
        put_stats(st + k, hi32, lo32, _mm256_cvtepi32_ps(fold8_max_epi32(c)));
        gh = _mm_max_epi16(gh, hi), gl = _mm_min_epi16(gl, lo);
        store8_epi32(o, k, lo32, hi32);
    }
    int32_t mx, mn;
    lanes_extremes(_mm256_cvtepi16_epi32(gh), _mm256_cvtepi16_epi32(gl), &mx, &mn);
    *smx = (int16_t)mx, *smn = (int16_t)mn, *snan = 0;
}

/* Floats: the keys as true_peak.c's key_extremes finds them (the largest and smallest bits
 * as signed, the largest as unsigned), and from them the points' float max and min: keys order
 * as the floats do, so the largest key is the largest float (+0 over -0, the same stored 0),
 * and a key beyond +inf's or below -inf's is a NaN, which flags its point as run_float does. */
static STAT_TARGET __attribute__((noinline)) void
stats_run_float(const float *p, Py_ssize_t groups, const struct run_out *o, Py_ssize_t k,
                float *smx, float *smn, int *snan, struct wf_block_stat *st, int at_start) {
    __m256 gh = _mm256_set1_ps(-INFINITY), gl = _mm256_set1_ps(INFINITY);
    int nan = 0;
    __m512 prev = at_start ? _mm512_setzero_ps() : _mm512_loadu_ps(p - 16);
    __mmask16 keep = at_start ? 0xfffc : 0xffff;
    const __m256i inf_key = _mm256_set1_epi32(0x7f800000);
    const __m256i minus_inf_key = _mm256_set1_epi32((int32_t)0x807fffff);
    for (Py_ssize_t g = 0; g < groups; g++, p += RUN_GROUP * STAT_POINT, k += RUN_GROUP) {
        __m256 c[RUN_GROUP];
        __m256i sh[RUN_GROUP], sl[RUN_GROUP], uh[RUN_GROUP];
        for (int j = 0; j < RUN_GROUP; j++) {
            const float *q = p + j * STAT_POINT;
            __m512 m = _mm512_setzero_ps();
            __m512i bmx = _mm512_set1_epi32(INT32_MIN), bmn = _mm512_set1_epi32(INT32_MAX);
            __m512i umx = _mm512_setzero_si512();
            for (int v = 0; v < STAT_POINT / 16; v++) {
                __m512 cur = _mm512_loadu_ps(q + 16 * v);
                __m512i bits = _mm512_castps_si512(cur);
                bmx = _mm512_max_epi32(bmx, bits);
                bmn = _mm512_min_epi32(bmn, bits);
                umx = _mm512_max_epu32(umx, bits);
                m = curve_step(m, prev, cur, keep);
                prev = cur, keep = 0xffff;
            }
            c[j] = half_max_ps(m);
            sh[j] = half_max_epi32(bmx), sl[j] = half_min_epi32(bmn), uh[j] = half_max_epu32(umx);
        }
        __m256i shi = fold8_max_epi32(sh), slo = fold8_min_epi32(sl), uhi = fold8_max_epu32(uh);
        /* key_extremes: some sign bit clear: the signed largest is the largest float, else the
         * signed smallest; some negative: the unsigned largest is the smallest float, else the
         * signed smallest; then keyed (negative floats' magnitude bits flipped). */
        __m256i kh = blend_by_sign(shi, slo, shi); /* shi negative: slo */
        __m256i kl = blend_by_sign(slo, uhi, uhi);
        kh = float_key8(kh), kl = float_key8(kl);
        put_stats(st + k, kh, kl, fold8_max_ps(c));
        int nanmask = _mm256_movemask_ps(_mm256_castsi256_ps(
            _mm256_or_si256(_mm256_cmpgt_epi32(kh, inf_key), _mm256_cmpgt_epi32(minus_inf_key, kl))));
        /* the keys back to floats (a key is its own inverse) */
        __m256 hi = _mm256_castsi256_ps(float_key8(kh)), lo = _mm256_castsi256_ps(float_key8(kl));
        gh = _mm256_max_ps(hi, gh), gl = _mm256_min_ps(lo, gl);
        nan |= nanmask;
        store8_ps(o, k, lo, hi, nanmask);
    }
    lanes_minmax_ps(gh, gl, smx, smn);
    *snan = nan != 0;
}

#define RUN_LANES(T) ((Py_ssize_t)(32 / sizeof(T)))
#define HAVE_RUNS runs_available()
#else
#define RUN_GROUP 8
#define RUN_LANES(T) ((Py_ssize_t)1)
#define HAVE_RUNS 0
struct run_out {
    double scale, top;
    char *points;
    int wide;
    Py_ssize_t stride;
};
/* Never called (HAVE_RUNS is 0): the piece loop does every point. */
#define NO_RUN(NAME, T)                                                                    \
    static inline void NAME(const T *p, Py_ssize_t spp, Py_ssize_t groups,                 \
                            const struct run_out *o, Py_ssize_t k, T *smx, T *smn,         \
                            int *snan) {                                                   \
        *smx = *smn = 0, *snan = 0;                                                        \
    }
NO_RUN(run_int16, int16_t)
NO_RUN(run_int32, int32_t)
NO_RUN(run_float, float)
#define NO_STATS_RUN(NAME, T)                                                              \
    static inline void NAME(const T *p, Py_ssize_t groups, const struct run_out *o,        \
                            Py_ssize_t k, T *smx, T *smn, int *snan,                       \
                            struct wf_block_stat *st, int at_start) {                      \
        *smx = *smn = 0, *snan = 0;                                                        \
    }
NO_STATS_RUN(stats_run_int16, int16_t)
NO_STATS_RUN(stats_run_int32, int32_t)
NO_STATS_RUN(stats_run_float, float)
#endif

/* With `stats` (spp 256, first 0, unit stride: the caller checks), each point's block stats
 * too: from the stats runs, and for the points the piece loop does, from their samples. */
#define DETAIL_FN(NAME, T, NANCHECK, RUN, STATS_RUN, KIND)                                 \
    HOT_CLONES static void NAME(const char *base, Py_ssize_t s0, Py_ssize_t n,             \
                                const int64_t *starts, Py_ssize_t nseg, T *mxo, T *mno,    \
                                Py_ssize_t first, Py_ssize_t spp, double scale, double top, \
                                char *points, int wide, Py_ssize_t stride, int merge,      \
                                struct wf_block_stat *stats) {                             \
        const T *p = (const T *)base;                                                      \
        int unit = s0 == (Py_ssize_t)sizeof(T);                                            \
        Py_ssize_t j = 0, k = 0, a = 0;                                                    \
        Py_ssize_t seg_end = nseg > 1 ? starts[1] : n;                                     \
        Py_ssize_t point_end = first > 0 ? first : spp;                                    \
        T smx = 0, smn = 0, pmx = 0, pmn = 0;                                              \
        int snan = 0, pnan = 0, sopen = 0, popen = 0;                                      \
        int runs = unit && spp % RUN_LANES(T) == 0 && HAVE_RUNS;                           \
        struct run_out out = {scale, top, points, wide, stride};                           \
        while (a < n) {                                                                    \
            Py_ssize_t lim = seg_end < n ? seg_end : n;                                    \
            Py_ssize_t groups = runs && point_end - a == spp ? (lim - a) / spp / RUN_GROUP : 0; \
            if (groups > 0) { /* whole points from a on, inside the segment */             \
                T mx, mn;                                                                  \
                int nan;                                                                   \
                if (stats) {                                                               \
                    STATS_RUN(p + a, groups, &out, k, &mx, &mn, &nan, stats, a == 0);      \
                } else {                                                                   \
                    RUN(p + a, spp, groups, &out, k, &mx, &mn, &nan);                      \
                }                                                                          \
                if (sopen) {                                                               \
                    smx = mx > smx ? mx : smx;                                             \
                    smn = mn < smn ? mn : smn;                                             \
                    snan |= nan;                                                           \
                } else {                                                                   \
                    smx = mx, smn = mn, snan = nan, sopen = 1;                             \
                }                                                                          \
                Py_ssize_t done = groups * RUN_GROUP;                                      \
                a += done * spp, k += done, point_end += done * spp;                       \
                if (a == lim) {                                                            \
                    mxo[j] = snan ? (T)NAN : smx;                                          \
                    mno[j] = snan ? (T)NAN : smn;                                          \
                    j++, sopen = 0;                                                        \
                    seg_end = j + 1 < nseg ? starts[j + 1] : n;                            \
                }                                                                          \
                continue;                                                                  \
            }                                                                              \
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
                    if (merge && k == 0) { /* the stored values are monotonic: fold them */ \
                        lo = q[0] < lo ? q[0] : lo, hi = q[1] > hi ? q[1] : hi;            \
                    }                                                                      \
                    q[0] = (int16_t)lo, q[1] = (int16_t)hi;                                \
                } else {                                                                   \
                    int8_t *q = (int8_t *)points + k * stride;                             \
                    if (merge && k == 0) {                                                 \
                        lo = q[0] < lo ? q[0] : lo, hi = q[1] > hi ? q[1] : hi;            \
                    }                                                                      \
                    q[0] = (int8_t)lo, q[1] = (int8_t)hi;                                  \
                }                                                                          \
                if (stats) {                                                               \
                    wf_block_stat(p, k * spp, b - k * spp, KIND, &stats[k]);               \
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

DETAIL_FN(detail_int16, int16_t, (void)0, run_int16, stats_run_int16, KIND_INT16)
DETAIL_FN(detail_int32, int32_t, (void)0, run_int32, stats_run_int32, KIND_INT32)
DETAIL_FN(detail_float, float, nan |= v != v, run_float, stats_run_float, KIND_FLOAT32)

PyObject *wf_detail_minmax(PyObject *self, PyObject *args) {
    PyObject *samples_o, *starts_o, *max_o, *min_o, *points_o, *stats_o = Py_None;
    Py_ssize_t first, spp, channel, channels;
    double scale;
    int bits, merge = 0;
    if (!PyArg_ParseTuple(args, "OOOOnndiOnn|pO", &samples_o, &starts_o, &max_o, &min_o, &first,
                          &spp, &scale, &bits, &points_o, &channel, &channels, &merge,
                          &stats_o)) {
        return NULL;
    }
    int want_stats = stats_o != Py_None;
    if (want_stats && !(wf_block_stats_available() && HAVE_RUNS && spp == WF_STAT_FRAMES &&
                        first == 0)) {
        PyErr_SetString(PyExc_ValueError, "stats need peak_stats_available(), spp 256 and "
                                          "first 0");
        return NULL;
    }
    merge = merge && first > 0; /* only a block starting inside a point continues one */
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
    if (wf_get_starts(starts_o, &tv, sv.shape[0]) < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = sv.shape[0], s0 = sv.strides[0], nseg = tv.len / 8;
    const int64_t *starts = tv.buf;
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
    Py_buffer stv = {0};
    if (want_stats && (s0 != sv.itemsize ||
                       wf_get_out(stats_o, &stv, 4, npoints * 3, "stats (int32, (points, 3))") < 0)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "stats need unit-stride samples");
        }
        PyBuffer_Release(&pv);
        PyBuffer_Release(&nv);
        PyBuffer_Release(&mv);
        PyBuffer_Release(&tv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    struct wf_block_stat *stats = want_stats ? stv.buf : NULL;
    const char *base = sv.buf;
    char *points = (char *)pv.buf + channel * 2 * width;
    double top = (double)(1 << (bits - 1));
    int wide = bits == 16;
    Py_BEGIN_ALLOW_THREADS
    if (k == KIND_INT16) {
        detail_int16(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride, merge, stats);
    } else if (k == KIND_INT32) {
        detail_int32(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride, merge, stats);
    } else {
        detail_float(base, s0, n, starts, nseg, mv.buf, nv.buf, first, spp, scale, top, points,
                     wide, stride, merge, stats);
    }
    Py_END_ALLOW_THREADS
    if (want_stats) {
        PyBuffer_Release(&stv);
    }
    PyBuffer_Release(&pv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&mv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&sv);
    return PyLong_FromSsize_t(npoints);
}

const char wf_detail_minmax_doc[] =
"detail_minmax(samples, starts, out_max, out_min, first, spp, scale, bits, points, channel,\n"
"              channels, merge=False) -> number of points\n\n"
"segment_minmax's out_max/out_min, and in the same pass the detail waveform's points: every\n"
"spp frames from `first` (the block's first point edge, 0 <= first < spp; a partial point\n"
"before it), min and max as audiowaveform stores them at `bits`, trunc(x * scale * 2**(bits-1))\n"
"clipped, into points[p, channel, 0/1] of a C-contiguous (points, channels, 2) int8/int16 array.\n"
"With merge (and first > 0), the partial first point continues the one already in points[0]:\n"
"its stored min and max fold with those there (the previous block's open point).\n"
"With `stats` (needs peak_stats_available(), spp 256, first 0 and unit-stride samples): each\n"
"point's block stats for true_peak, into a C-contiguous (points, 3) int32 buffer: the largest\n"
"and smallest key and the largest |second difference| (float32 bits), computed in this pass.";

/* The waveform's levels (peaks.py): every channel's sum of squares, and per segment the maximum
 * of |mono|, the float32 sum of the channels in their order (numpy's float32 arithmetic, so the
 * same values), without the float32 copies, the dot product and the reductions numpy needs.
 * The samples must be finite (peaks.py refuses a block with NaN or infinities first). */
#define LEVELS_CHUNK 1024
#define WF_LEVELS_MAX_CHANNELS 64 /* AudioLimits' bound */

typedef float levels_v8f __attribute__((vector_size(32)));
typedef double levels_v4d __attribute__((vector_size(32)));
typedef double levels_v8d __attribute__((vector_size(64)));
typedef int16_t levels_v8s __attribute__((vector_size(16)));
typedef int32_t levels_v8i __attribute__((vector_size(32)));
/* The mono chunk: written as floats, its |x| maximum read through the bits (finite floats of
 * one sign order as their bit patterns, so the integer max vectorises). */
union levels_fi { float f; int32_t i; };

/* One channel of a chunk into the mono sum, its squares (of the float32 values) in double:
 * eight lanes at a time with two vector partial sums (one running sum would cost an add
 * latency per sample, and without -ffast-math GCC keeps it). */
#define LEVELS_FN(NAME, T, LOAD8)                                                          \
    HOT_CLONES static double NAME(const char *base, Py_ssize_t s0, Py_ssize_t a,           \
                                  Py_ssize_t m, union levels_fi *mono, int first) {        \
        double sum = 0.0;                                                                  \
        Py_ssize_t i = 0;                                                                  \
        if (s0 == (Py_ssize_t)sizeof(T)) {                                                 \
            const T *p = (const T *)base + a;                                              \
            levels_v4d acc0 = {0.0, 0.0, 0.0, 0.0}, acc1 = acc0;                           \
            for (; i + 8 <= m; i += 8) {                                                   \
                levels_v8f v;                                                              \
                LOAD8;                                                                     \
                /* converted whole: two 4-wide conversions (halves converted one by one   \
                 * become four 2-wide ones and their shuffles, twice the time) */          \
                levels_v8d w = __builtin_convertvector(v, levels_v8d);                     \
                levels_v4d x, y;                                                           \
                memcpy(&x, &w, sizeof x);                                                  \
                memcpy(&y, (const char *)&w + sizeof x, sizeof y);                         \
                acc0 += x * x;                                                             \
                acc1 += y * y;                                                             \
                if (!first) {                                                              \
                    levels_v8f old;                                                        \
                    memcpy(&old, mono + i, sizeof old);                                    \
                    v = old + v;                                                           \
                }                                                                          \
                memcpy(mono + i, &v, sizeof v);                                            \
            }                                                                              \
            levels_v4d s = acc0 + acc1;                                                    \
            sum = (s[0] + s[1]) + (s[2] + s[3]);                                           \
        }                                                                                  \
        for (; i < m; i++) {                                                               \
            float v = (float)*(const T *)(base + (a + i) * s0);                            \
            sum += (double)v * (double)v;                                                  \
            mono[i].f = first ? v : mono[i].f + v;                                         \
        }                                                                                  \
        return sum;                                                                        \
    }

LEVELS_FN(levels_int16, int16_t,
          levels_v8s raw; memcpy(&raw, p + i, sizeof raw); v = __builtin_convertvector(raw, levels_v8f))
LEVELS_FN(levels_int32, int32_t,
          levels_v8i raw; memcpy(&raw, p + i, sizeof raw); v = __builtin_convertvector(raw, levels_v8f))
LEVELS_FN(levels_float, float, memcpy(&v, p + i, sizeof v))

HOT_CLONES static float abs_max(const union levels_fi *mono, Py_ssize_t m, float top) {
    union levels_fi t = {.f = top};
    int32_t mx = t.i;
    for (Py_ssize_t i = 0; i < m; i++) {
        int32_t v = mono[i].i & 0x7fffffff;
        mx = v > mx ? v : mx;
    }
    t.i = mx;
    return t.f;
}

PyObject *wf_levels(PyObject *self, PyObject *args) {
    PyObject *columns_o, *starts_o, *mono_o;
    if (!PyArg_ParseTuple(args, "OOO", &columns_o, &starts_o, &mono_o)) {
        return NULL;
    }
    Py_ssize_t ch = PySequence_Size(columns_o);
    if (ch < 0) {
        return NULL;
    }
    Py_buffer views[WF_LEVELS_MAX_CHANNELS], tv, mv;
    enum kind kinds[WF_LEVELS_MAX_CHANNELS];
    Py_ssize_t got = 0, n = -1;
    PyObject *result = NULL;
    if (ch < 1 || ch > WF_LEVELS_MAX_CHANNELS) {
        PyErr_Format(PyExc_ValueError, "1 to %d channels", WF_LEVELS_MAX_CHANNELS);
        goto done;
    }
    for (; got < ch; got++) {
        PyObject *item = PySequence_GetItem(columns_o, got);
        int failed = item == NULL || wf_get_channel(item, &views[got], &kinds[got]) < 0;
        Py_XDECREF(item);
        if (failed) {
            goto done;
        }
        Py_ssize_t len = views[got].shape[0];
        if ((n >= 0 && len != n) || kinds[got] != kinds[0]) {
            got++;
            PyErr_SetString(PyExc_ValueError, "channels must have one length and one type");
            goto done;
        }
        n = len;
    }
    if (wf_get_starts(starts_o, &tv, n) < 0) {
        goto done;
    }
    Py_ssize_t nseg = tv.len / 8;
    const int64_t *starts = tv.buf;
    if (wf_get_out(mono_o, &mv, 4, nseg, "mono") < 0) {
        PyBuffer_Release(&tv);
        goto done;
    }
    double sum = 0.0;
    float *out = mv.buf;
    Py_BEGIN_ALLOW_THREADS
    union levels_fi mono[LEVELS_CHUNK];
    for (Py_ssize_t j = 0; j < nseg; j++) {
        Py_ssize_t end = j + 1 < nseg ? starts[j + 1] : n;
        float top = 0.0f;
        for (Py_ssize_t a = starts[j]; a < end; a += LEVELS_CHUNK) {
            Py_ssize_t m = end - a < LEVELS_CHUNK ? end - a : LEVELS_CHUNK;
            for (Py_ssize_t c = 0; c < ch; c++) {
                const char *base = views[c].buf;
                Py_ssize_t s0 = views[c].strides[0];
                if (kinds[0] == KIND_INT16) {
                    sum += levels_int16(base, s0, a, m, mono, c == 0);
                } else if (kinds[0] == KIND_INT32) {
                    sum += levels_int32(base, s0, a, m, mono, c == 0);
                } else {
                    sum += levels_float(base, s0, a, m, mono, c == 0);
                }
            }
            top = abs_max(mono, m, top);
        }
        out[j] = top;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&mv);
    PyBuffer_Release(&tv);
    result = PyFloat_FromDouble(sum);
done:
    for (Py_ssize_t c = 0; c < got; c++) {
        PyBuffer_Release(&views[c]);
    }
    return result;
}

const char wf_levels_doc[] =
"levels(columns, starts, out_mono) -> sum of squares\n\n"
"The channels' (same length and type) sum of squares as float32 values, in double; and into\n"
"out_mono[j] (float32) the maximum of |sum of the channels| (float32, in channel order) over\n"
"segment j (starts as for segment_minmax).";

/* An interleaved stereo block into two contiguous channels (peaks.py's columns): one pass that
 * reads each frame as one 2- or 4-byte pair, instead of numpy's strided copies. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SPLIT_LOW_IS_LEFT 0
#else
#define SPLIT_LOW_IS_LEFT 1
#endif

#define SPLIT_FN(NAME, HALF, WHOLE, BITS)                                                  \
    HOT_CLONES static void NAME(const char *in, Py_ssize_t n, HALF *left, HALF *right) {   \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            WHOLE x;                                                                       \
            memcpy(&x, in + i * sizeof x, sizeof x);                                       \
            HALF lo = (HALF)x, hi = (HALF)(x >> BITS);                                     \
            left[i] = SPLIT_LOW_IS_LEFT ? lo : hi;                                         \
            right[i] = SPLIT_LOW_IS_LEFT ? hi : lo;                                        \
        }                                                                                  \
    }

SPLIT_FN(split_16, uint16_t, uint32_t, 16)
SPLIT_FN(split_32, uint32_t, uint64_t, 32)

PyObject *wf_split_stereo(PyObject *self, PyObject *args) {
    PyObject *block_o, *left_o, *right_o;
    if (!PyArg_ParseTuple(args, "OOO", &block_o, &left_o, &right_o)) {
        return NULL;
    }
    Py_buffer bv, lv, rv;
    enum kind k;
    if (PyObject_GetBuffer(block_o, &bv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (wf_sample_kind(&bv, &k) < 0) {
        PyBuffer_Release(&bv);
        return NULL;
    }
    if (bv.ndim != 2 || bv.shape[1] != 2) {
        PyErr_SetString(PyExc_ValueError, "block must be C-contiguous (frames, 2)");
        PyBuffer_Release(&bv);
        return NULL;
    }
    Py_ssize_t n = bv.shape[0];
    if (wf_get_out(left_o, &lv, bv.itemsize, n, "left") < 0) {
        PyBuffer_Release(&bv);
        return NULL;
    }
    if (wf_get_out(right_o, &rv, bv.itemsize, n, "right") < 0) {
        PyBuffer_Release(&lv);
        PyBuffer_Release(&bv);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (bv.itemsize == 2) {
        split_16(bv.buf, n, lv.buf, rv.buf);
    } else {
        split_32(bv.buf, n, lv.buf, rv.buf);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&rv);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&bv);
    Py_RETURN_NONE;
}

const char wf_split_stereo_doc[] =
"split_stereo(block, left, right)\n\n"
"A C-contiguous (frames, 2) block of int16, int32 or float32 into its two channels (contiguous,\n"
"of the same item size).";
