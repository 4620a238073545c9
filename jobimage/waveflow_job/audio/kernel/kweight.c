/* BS.1770 K-weighting: libebur128's filter (direct form II, double state, the coefficients
 * the caller computes as libebur128 does), the sum of squares of the last `window` frames of
 * every `step` frames.
 *
 * Why lanes and segments: the recursion is one multiply-add chain per channel, so a stereo
 * frame alone fills only two lanes of a vector. A long block is cut into K time segments per
 * channel, and every (channel, segment) pair is a lane: 8 lanes per AVX-512 vector, 4 with
 * AVX2, 2 in plain C (SSE2, NEON). Segment 0 starts from the state carried between blocks;
 * segment j > 0 starts from zero PRIMING frames before its first counted frame (the frames
 * segment j - 1 counts), as LoudnessMeter.prime does for a range: the 38 Hz high-pass is a
 * (nearly) critically damped double pole with a time constant of 4.2 ms, so the error left
 * after 200 ms of a state built by low frequencies is (1 + t/tau) exp(-t/tau) ~ 7e-20 of it,
 * below a double's rounding. A state left by loud content above ~5 kHz decays through the
 * filter's other modes too: up to ~100 x 2^-53 of it after 200 ms at 96 kHz, ~855 x at 192 kHz
 * (measured), but such a state is itself ~0.07 of the signal, so the filtered output is still
 * within about one rounding (tests/job/test_kweight_kernel.py: measured, and every width and
 * segment count equal to one sequential lane and to libebur128). Each lane counts exactly the
 * frames one sequential pass would; the squares of a step cut by a segment bound are summed in
 * two parts.
 * Lanes run out of step with each other: each has its own step and window bounds, handled
 * between runs of frames (no lane's bookkeeping changes inside a run).
 *
 * The samples are converted to double, transposed so a vector holds one frame of every lane
 * and filtered in registers, a vector of frames at a time (PLANAR and STEREO below; with
 * AVX-512 transposed while still 32 bits wide, see fused_x8); 5 to 8 interleaved channels
 * need no segments: a frame is a vector (FRAME). Other layouts and the frames left over go
 * through a tile in memory.
 *
 * The filter runs on the samples as they are (integers as doubles), not divided by the full
 * scale: libebur128's division is by a power of two, so it commutes exactly with the filter
 * (the state is carried divided by it, the squares multiplied by its square at each step's
 * end), and one multiply per sample is saved. */
#include "kernel.h"

#define STATE 5 /* per channel: v1..v4 of the filter, the running sum of squares */
#define MAX_CHANNELS 64
#define MAX_LANES 64
#define MAX_SEGMENTS 16
#define TILE 256 /* frames converted and filtered at a time (a multiple of every width) */
#define SPAN 2048 /* samples of a segment's interleaved frames converted at a time (FRAMES) */

/* One (channel, segment) lane. Loop time t is block frame `origin + t`; the lane primes its
 * filter for t < count_from and ends at t == end. */
struct lane {
    const char *src; /* the channel's sample at block frame `origin` */
    Py_ssize_t origin, count_from, end;
    int channel;
    int carries;  /* the block's last segment: its end state and open sum are carried */
};

/* How a group's lanes read their samples. ROWS: any strides, lane by lane, through memory;
 * FRAMES: interleaved frames of 3 or more channels, lanes segment-major, each segment's frames
 * converted whole (contiguous) then taken apart, through memory; PLANAR: each lane's samples contiguous, a vector of frames per lane at a time, transposed
 * in registers; STEREO: interleaved stereo frames, a lane pair (L, R) per segment, a vector
 * of half as many frames per pair at a time; FRAME: interleaved frames of 5 to `lanes`
 * channels (5.1, 7.1), one segment, a lane per channel: a frame is a vector (the lanes past
 * the last channel idle on the next frame's samples). */
enum mode { MODE_ROWS, MODE_FRAMES, MODE_PLANAR, MODE_STEREO, MODE_FRAME };

/* What every lane shares. */
struct job {
    enum kind k;
    Py_ssize_t s0; /* bytes from one frame to the next */
    Py_ssize_t item; /* bytes per sample */
    int channels;    /* per frame */
    enum mode mode;
    double inv; /* the full scale's inverse (a power of two) */
    double out2; /* a lane's sum of squares to the energy's scale: (inv b0)^2 */
    const double *filt; /* a1..a4 and c1..c4 of the filter's form (filter_form) */
    const double *weights;
    double *st, *energies, *carry; /* carry: per channel, the open step's sum at the end */
    Py_ssize_t step, quiet, filled, done; /* quiet: frames of a step before its window */
    Py_ssize_t frames; /* the block's: how far past a lane's end its samples can be read */
};

/* The form the lanes filter in: direct form II's v0 = x - a1 v1 - ... - a4 v4 as
 * libebur128, but y / b0 = x + c1 v1 + ... + c4 v4 with c_i = b_i / b0 - a_i (y = b0 v0 +
 * b1 v1 + ... + b4 v4 written out), b0^2 applied to each step's sum of squares: one
 * multiply-add per frame less, and y no longer waits for v0. Why the c_i are rounded once,
 * from the exact quotient: at low frequencies the numerator's double zero at DC cancels the
 * poles' gain (v ~ 1e5 x at 96 kHz), so an error d in a coefficient moves y by d |v|; the
 * c_i are small (|c_i| < 0.3: the shelf and the high-pass nearly cancel their own poles),
 * so their rounding is 10-100x smaller than b_i / b0's would be. What is left is below the
 * rounding noise libebur128's own form already has there (tests/job/test_kweight_kernel.py:
 * pure 10-100 Hz tones at 44.1-192 kHz, as close to libebur128 as the previous form).
 * filt: a1..a4 then c1..c4; 0 when b0 is 0. */
static int filter_form(const double *co, double *filt) {
    if (co[0] == 0.0) {
        return 0;
    }
    for (int i = 0; i < 4; i++) {
        filt[i] = co[5 + i];
        filt[4 + i] = (double)((long double)co[1 + i] / (long double)co[0] - (long double)co[5 + i]);
    }
    return 1;
}

/* count samples from p, `s0` bytes apart, into out as doubles (unscaled: see the top of
 * this file). Contiguous samples are converted in vectors. */
#define CONVERT_LOOP(T)                                                                    \
    do {                                                                                   \
        if (s0 == (Py_ssize_t)sizeof(T)) {                                                 \
            const T *src = (const T *)(const void *)p;                                     \
            for (Py_ssize_t i = 0; i < count; i++) {                                       \
                out[i] = (double)src[i];                                                   \
            }                                                                              \
        } else {                                                                           \
            for (Py_ssize_t i = 0; i < count; i++) {                                       \
                T raw;                                                                     \
                memcpy(&raw, p + i * s0, sizeof raw);                                      \
                out[i] = (double)raw;                                                      \
            }                                                                              \
        }                                                                                  \
    } while (0)

static inline __attribute__((always_inline)) void
convert(enum kind k, const char *p, Py_ssize_t s0, Py_ssize_t count, double *restrict out) {
    switch (k) {
    case KIND_INT16: CONVERT_LOOP(int16_t); break;
    case KIND_INT32: CONVERT_LOOP(int32_t); break;
    default: CONVERT_LOOP(float); break;
    }
}

/* Frames a lane still has among loop times [t, t + len). */
static inline Py_ssize_t live_frames(const struct lane *ln, Py_ssize_t t, Py_ssize_t len) {
    Py_ssize_t live = ln->end - t;
    return live < 0 ? 0 : live > len ? len : live;
}

/* One lane's samples for loop times [t, t + len) into row, zeros from its end on. */
static inline __attribute__((always_inline)) void
convert_lane(const struct job *job, const struct lane *ln, Py_ssize_t t, Py_ssize_t len,
             double *restrict row) {
    Py_ssize_t live = live_frames(ln, t, len);
    convert(job->k, ln->src + t * job->s0, job->s0, live, row);
    for (Py_ssize_t i = live; i < len; i++) {
        row[i] = 0.0;
    }
}

/* Every channel of a lane's segment, frames [t, t + len), frame-major into span (zeros from
 * its end on), and each of the segment's lanes [first, last) taken from it into its row. */
static inline __attribute__((always_inline)) void
convert_frames(const struct job *job, const struct lane *ln, int first, int last, Py_ssize_t t,
               Py_ssize_t len, double *restrict span, double (*rows)[TILE]) {
    const int ch = job->channels;
    Py_ssize_t live = live_frames(&ln[first], t, len) * ch;
    const char *p = ln[first].src - ln[first].channel * job->item + t * job->s0;
    convert(job->k, p, job->item, live, span);
    for (Py_ssize_t i = live; i < len * ch; i++) {
        span[i] = 0.0;
    }
    for (int l = first; l < last; l++) {
        const double *from = span + ln[l].channel;
        for (Py_ssize_t i = 0; i < len; i++) {
            rows[l][i] = from[i * ch];
        }
    }
}

/* Where a lane is in its steps, carried from stop to stop so that a stop costs compares and
 * adds, not a division per lane: `bound` is the first loop time after the last stop at which
 * a step starts, `index` the step (of the job's) that the frames before `bound` belong to,
 * `at` the lane's next event (its priming ends, it ends, a step ends or its window opens). */
struct clock {
    Py_ssize_t bound, index, at;
};

/* The next loop time after t at which a lane's bookkeeping changes (t < ck->bound). */
static inline Py_ssize_t next_event(const struct job *job, const struct lane *ln,
                                    const struct clock *ck, Py_ssize_t t) {
    if (t >= ln->end) {
        return PY_SSIZE_T_MAX;
    }
    Py_ssize_t next = ln->end;
    if (t < ln->count_from && ln->count_from < next) {
        next = ln->count_from;
    }
    Py_ssize_t open = ck->bound - job->step + job->quiet; /* after t: the window is to open */
    Py_ssize_t at = open > t ? open : ck->bound;
    return at < next ? at : next;
}

/* A lane's clock at loop time 0 (the only division: one per lane and call). */
static inline void clock_start(const struct job *job, const struct lane *ln, struct clock *ck) {
    Py_ssize_t frame = job->filled + ln->origin;
    ck->index = frame / job->step;
    ck->bound = (ck->index + 1) * job->step - frame;
    ck->at = next_event(job, ln, ck, 0);
}

/* A partial or whole step's sum of one lane, into the step's energy (or the carried sum when
 * the step is still open at the end of the block). */
static void deposit(const struct job *job, const struct lane *ln, Py_ssize_t step_index,
                    double sum) {
    const int channel = ln->channel;
    sum *= job->out2; /* squares of unscaled samples, divided by b0 */
    if (job->weights[channel] == 0.0) {
        return; /* filtered beside its neighbour in a stereo pair, not measured */
    }
    if (step_index < job->done) {
        job->energies[step_index] += job->weights[channel] * sum;
    } else {
        job->carry[channel] += sum;
    }
}

/* The bookkeeping of one lane at its event at loop time t (frames [0, t) filtered): its
 * clock moved on to t, `v` its four delays `stride` doubles apart, `sum` its squares since the
 * last reset. */
static void lane_events(const struct job *job, const struct lane *ln, struct clock *ck,
                        Py_ssize_t t, const double *v, int stride, double *sum) {
    Py_ssize_t phase, index; /* t's place in its step, and the step */
    if (t == ck->bound) {
        phase = 0;
        index = ++ck->index;
        ck->bound += job->step;
    } else {
        phase = t - (ck->bound - job->step);
        index = ck->index;
    }
    ck->at = next_event(job, ln, ck, t);
    if (t == ln->count_from) {
        *sum = 0.0; /* priming over: what it summed is segment j - 1's */
    }
    if (t > ln->count_from && phase == 0) {
        deposit(job, ln, index - 1, *sum);
        *sum = 0.0;
    }
    if (t >= ln->count_from && t < ln->end && phase == job->quiet && job->quiet > 0) {
        *sum = 0.0; /* the step's frames before its window are not measured */
    }
    if (t == ln->end) {
        /* Only frames of the open step's window count: none if it has not reached it. */
        double part = phase > job->quiet ? *sum : 0.0;
        if (t > ln->count_from) {
            deposit(job, ln, index, part);
        }
        if (ln->carries && job->weights[ln->channel] != 0.0) {
            for (int d = 0; d < 4; d++) {
                job->st[ln->channel * STATE + d] = v[d * stride] * job->inv;
            }
        }
    }
}

/* Transposes of `lanes` vectors in registers: r[l][i] -> r[i][l]; and for STEREO the pairs
 * of doubles of lanes / 2 vectors (each holding lanes / 2 frames of one segment's L and R):
 * a[q] holds frames f of pair q, out[f] frame f of every pair. */
typedef double tvec2 __attribute__((vector_size(16)));
typedef long long tidx2 __attribute__((vector_size(16)));
typedef double tvec4 __attribute__((vector_size(32)));
typedef long long tidx4 __attribute__((vector_size(32)));
typedef double tvec8 __attribute__((vector_size(64)));
typedef long long tidx8 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) void transpose_regs2(tvec2 *r) {
    tvec2 x0 = __builtin_shuffle(r[0], r[1], (tidx2){0, 2});
    tvec2 x1 = __builtin_shuffle(r[0], r[1], (tidx2){1, 3});
    r[0] = x0;
    r[1] = x1;
}

static inline __attribute__((always_inline)) void transpose_regs4(tvec4 *r) {
    tvec4 u[4];
    for (int l = 0; l < 4; l += 2) {
        u[l] = __builtin_shuffle(r[l], r[l + 1], (tidx4){0, 4, 2, 6});
        u[l + 1] = __builtin_shuffle(r[l], r[l + 1], (tidx4){1, 5, 3, 7});
    }
    r[0] = __builtin_shuffle(u[0], u[2], (tidx4){0, 1, 4, 5});
    r[2] = __builtin_shuffle(u[0], u[2], (tidx4){2, 3, 6, 7});
    r[1] = __builtin_shuffle(u[1], u[3], (tidx4){0, 1, 4, 5});
    r[3] = __builtin_shuffle(u[1], u[3], (tidx4){2, 3, 6, 7});
}

static inline __attribute__((always_inline)) void transpose_regs8(tvec8 *r) {
    tvec8 u[8], w[8];
    /* pairs of rows at even frames (u[l]) and odd frames (u[l + 1]) */
    for (int l = 0; l < 8; l += 2) {
        u[l] = __builtin_shuffle(r[l], r[l + 1], (tidx8){0, 8, 2, 10, 4, 12, 6, 14});
        u[l + 1] = __builtin_shuffle(r[l], r[l + 1], (tidx8){1, 9, 3, 11, 5, 13, 7, 15});
    }
    /* quads of rows: w[h] frames 0 and 4, w[h + 1] 1 and 5, w[h + 2] 2 and 6, w[h + 3] 3, 7 */
    for (int h = 0; h < 8; h += 4) {
        for (int odd = 0; odd < 2; odd++) {
            tvec8 a = u[h + odd], b = u[h + 2 + odd];
            w[h + odd] = __builtin_shuffle(a, b, (tidx8){0, 1, 8, 9, 4, 5, 12, 13});
            w[h + 2 + odd] = __builtin_shuffle(a, b, (tidx8){2, 3, 10, 11, 6, 7, 14, 15});
        }
    }
    for (int q = 0; q < 4; q++) { /* w[q]: frames q and q + 4 of rows 0-3, w[q + 4] of 4-7 */
        r[q] = __builtin_shuffle(w[q], w[q + 4], (tidx8){0, 1, 2, 3, 8, 9, 10, 11});
        r[q + 4] = __builtin_shuffle(w[q], w[q + 4], (tidx8){4, 5, 6, 7, 12, 13, 14, 15});
    }
}

static inline __attribute__((always_inline)) void pairs_regs2(const tvec2 *a, tvec2 *out) {
    out[0] = a[0];
}

static inline __attribute__((always_inline)) void pairs_regs4(const tvec4 *a, tvec4 *out) {
    out[0] = __builtin_shuffle(a[0], a[1], (tidx4){0, 1, 4, 5});
    out[1] = __builtin_shuffle(a[0], a[1], (tidx4){2, 3, 6, 7});
}

static inline __attribute__((always_inline)) void pairs_regs8(const tvec8 *a, tvec8 *out) {
    tvec8 b[4];
    for (int q = 0; q < 4; q += 2) { /* b[q]: frames 0, 2 of pairs q, q + 1; b[q + 1]: 1, 3 */
        b[q] = __builtin_shuffle(a[q], a[q + 1], (tidx8){0, 1, 8, 9, 4, 5, 12, 13});
        b[q + 1] = __builtin_shuffle(a[q], a[q + 1], (tidx8){2, 3, 10, 11, 6, 7, 14, 15});
    }
    out[0] = __builtin_shuffle(b[0], b[2], (tidx8){0, 1, 2, 3, 8, 9, 10, 11});
    out[2] = __builtin_shuffle(b[0], b[2], (tidx8){4, 5, 6, 7, 12, 13, 14, 15});
    out[1] = __builtin_shuffle(b[1], b[3], (tidx8){0, 1, 2, 3, 8, 9, 10, 11});
    out[3] = __builtin_shuffle(b[1], b[3], (tidx8){4, 5, 6, 7, 12, 13, 14, 15});
}

/* One frame of every lane through the filter (filter_form: y / b0 from x and the delays,
 * beside the recursion, not after it). The recursion's critical path is one multiply-add
 * per frame: the older terms are summed first, the newest (a1 * v1) last. */
#define FILTER_STEP(xv)                                                                    \
    do {                                                                                   \
        __typeof__(v1) v0 = ((((xv) - a4 * v4) - a3 * v3) - a2 * v2) - a1 * v1;            \
        __typeof__(v1) y = ((((xv) + c4 * v4) + c3 * v3) + c2 * v2) + c1 * v1;             \
        v4 = v3; v3 = v2; v2 = v1; v1 = v0;                                                \
        sum += y * y;                                                                      \
    } while (0)

#define LOAD_STATE(T)                                                                      \
    const double a1 = co[0], a2 = co[1], a3 = co[2], a4 = co[3];                           \
    const double c1 = co[4], c2 = co[5], c3 = co[6], c4 = co[7];                           \
    T v1, v2, v3, v4, sum;                                                                 \
    memcpy(&v1, v + 0 * (sizeof(T) / 8), sizeof v1);                                       \
    memcpy(&v2, v + 1 * (sizeof(T) / 8), sizeof v2);                                       \
    memcpy(&v3, v + 2 * (sizeof(T) / 8), sizeof v3);                                       \
    memcpy(&v4, v + 3 * (sizeof(T) / 8), sizeof v4);                                       \
    memcpy(&sum, sums, sizeof sum)

#define STORE_STATE(T)                                                                     \
    memcpy(v + 0 * (sizeof(T) / 8), &v1, sizeof v1);                                       \
    memcpy(v + 1 * (sizeof(T) / 8), &v2, sizeof v2);                                       \
    memcpy(v + 2 * (sizeof(T) / 8), &v3, sizeof v3);                                       \
    memcpy(v + 3 * (sizeof(T) / 8), &v4, sizeof v4);                                       \
    memcpy(sums, &sum, sizeof sum)

/* `lanes` int16 samples as doubles: GCC would convert a vector of int16 to double through
 * scalars, or split it; on x86 the two instructions that do it. */
typedef int16_t h16x2 __attribute__((vector_size(4)));
typedef int32_t i32x2v __attribute__((vector_size(8)));
static inline __attribute__((always_inline)) tvec2 widen16_2(const char *p) {
    h16x2 raw;
    memcpy(&raw, p, sizeof raw);
    return __builtin_convertvector(__builtin_convertvector(raw, i32x2v), tvec2);
}

#ifdef WF_X86_SIMD
#include <immintrin.h>
static inline __attribute__((always_inline, target("avx2,fma"))) tvec4
widen16_4(const char *p) {
    return (tvec4)_mm256_cvtepi32_pd(_mm_cvtepi16_epi32(_mm_loadl_epi64((const void *)p)));
}
static inline __attribute__((always_inline, target("avx512f,fma"))) tvec8
widen16_8(const char *p) {
    return (tvec8)_mm512_cvtepi32_pd(_mm256_cvtepi16_epi32(_mm_loadu_si128((const void *)p)));
}

/* One frame of every lane through the filter, the delays in rotated names (A the newest):
 * the newest value replaces the oldest, D, so four calls in turn need no copies. */
#define FILTER_ROTATED(xv, A, B, C, D)                                                     \
    do {                                                                                   \
        __typeof__(A) v0 = ((((xv) - a4 * D) - a3 * C) - a2 * B) - a1 * A;                 \
        __typeof__(A) y = ((((xv) + c4 * D) + c3 * C) + c2 * B) + c1 * A;                  \
        D = v0;                                                                            \
        sum += y * y;                                                                      \
    } while (0)

#define X8 __attribute__((target("avx512f,fma")))

/* The last step of both 8 x 8 transposes of 32-bit samples: p0, p1 hold frames 0-3 and 4-7
 * of lanes 0-3 (frame-major, 4 lanes a frame), q0, q1 the same of lanes 4-7; out[k] gets
 * frame 2k of lanes 0-7, then frame 2k + 1. */
X8 static inline __attribute__((always_inline)) void
pair_frames8(__m512i p0, __m512i p1, __m512i q0, __m512i q1, __m512i *out) {
    const __m512i even = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19,
                                           4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i odd = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27,
                                          12, 13, 14, 15, 28, 29, 30, 31);
    out[0] = _mm512_permutex2var_epi32(p0, even, q0);
    out[1] = _mm512_permutex2var_epi32(p0, odd, q0);
    out[2] = _mm512_permutex2var_epi32(p1, even, q1);
    out[3] = _mm512_permutex2var_epi32(p1, odd, q1);
}

/* The first step of both transposes below: v[0], v[1] and v[2], v[3] each merged by the
 * `low` and `high` permutations, then paired. */
X8 static inline __attribute__((always_inline)) void
merge_pairs8(const __m512i *v, __m512i low, __m512i high, __m512i *out) {
    pair_frames8(_mm512_permutex2var_epi32(v[0], low, v[1]),
                 _mm512_permutex2var_epi32(v[0], high, v[1]),
                 _mm512_permutex2var_epi32(v[2], low, v[3]),
                 _mm512_permutex2var_epi32(v[2], high, v[3]), out);
}

/* Of two vectors each holding 8 32-bit items of two rows (a, b and c, d): items 0-3 of every
 * row, item-major (a0 b0 c0 d0 a1 ...), and items 4-7. */
#define ROWS8_LOW _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27)
#define ROWS8_HIGH _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31)

/* PLANAR: z[j] holds 8 frames of lane 2j then 8 of lane 2j + 1. */
X8 static inline __attribute__((always_inline)) void
transpose_rows8(const __m512i *z, __m512i *out) {
    merge_pairs8(z, ROWS8_LOW, ROWS8_HIGH, out);
}

/* STEREO: s[q] holds 8 interleaved (L, R) frames of segment q (lanes 2q, 2q + 1). */
X8 static inline __attribute__((always_inline)) void
transpose_pairs8(const __m512i *s, __m512i *out) {
    merge_pairs8(s,
                 _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23),
                 _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31),
                 out);
}

/* 8 frames of the 8 lanes read from p[] at byte offset `at`, transposed while still 32 bits
 * wide (int16 widened first) into out: frame f's lanes at out + 8 f. */
X8 static inline __attribute__((always_inline)) void
gather_x8(const char *const *p, Py_ssize_t at, const enum mode mode, const enum kind k,
          int32_t *out) {
    __m512i z[4], o[4];
    if (mode == MODE_STEREO && k == KIND_INT16) {
        /* An int16 (L, R) frame is 32 bits: the 4 segments' frames transposed as such (two
         * shuffles of two pairs of segments, not four widenings and eight shuffles), then
         * widened from memory, two frames of the 8 lanes at a time. */
        int16_t frames16[64] __attribute__((aligned(64)));
        __m512i s01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
                                             (const void *)(p[0] + at))),
                                         _mm256_loadu_si256((const void *)(p[1] + at)), 1);
        __m512i s23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
                                             (const void *)(p[2] + at))),
                                         _mm256_loadu_si256((const void *)(p[3] + at)), 1);
        _mm512_store_si512(frames16, _mm512_permutex2var_epi32(s01, ROWS8_LOW, s23));
        _mm512_store_si512(frames16 + 32, _mm512_permutex2var_epi32(s01, ROWS8_HIGH, s23));
        __asm__("" : "+m"(frames16)); /* read back from memory, not taken apart in registers */
        for (int q = 0; q < 4; q++) {
            _mm512_store_si512(out + 16 * q,
                               _mm512_cvtepi16_epi32(_mm256_load_si256((const void *)(frames16 + 16 * q))));
        }
        return;
    }
    if (mode == MODE_STEREO) {
        for (int q = 0; q < 4; q++) { /* int32 or float32: int16 returned above */
            z[q] = _mm512_loadu_si512((const void *)(p[q] + at));
        }
        transpose_pairs8(z, o);
    } else {
        for (int j = 0; j < 4; j++) {
            const void *a = p[2 * j] + at, *b = p[2 * j + 1] + at;
            if (k == KIND_INT16) {
                __m256i two = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128(a)), _mm_loadu_si128(b), 1);
                z[j] = _mm512_cvtepi16_epi32(two);
            } else {
                z[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(a)),
                                          _mm256_loadu_si256(b), 1);
            }
        }
        transpose_rows8(z, o);
    }
    for (int q = 0; q < 4; q++) {
        _mm512_store_si512(out + 16 * q, o[q]);
    }
}

/* fused for 8 lanes (AVX-512): 8 frames of 8 lanes are transposed in 4 vectors of 16 32-bit
 * samples (12 shuffles for PLANAR, 8 for STEREO, where doubles would take 24; int16 STEREO
 * frames are 32 bits themselves: 4 shuffles, then 4 widenings from memory), stored, and
 * converted to double from memory a frame at a time (converting a register's upper half
 * takes one shuffle more). The next 8 frames are read and transposed before these are
 * filtered, so that their loads and shuffles are not held up behind the recursion. */
X8 static inline __attribute__((always_inline)) void
fused_x8(const struct job *job, const struct lane *ln, int n, Py_ssize_t t, Py_ssize_t chunks,
         Py_ssize_t tail, const enum mode mode, const enum kind k, double *restrict v,
         double *restrict sums) {
    const double *co = job->filt;
    const int streams = mode == MODE_STEREO ? 4 : 8;
    const int per = mode == MODE_STEREO ? 2 : 1; /* lanes per stream */
    const Py_ssize_t advance = 8 * job->s0;
    const char *p[8];
    const char *any = NULL;
    for (int q = 0; q < streams; q++) {
        const struct lane *l = &ln[q * per];
        p[q] = q * per < n && t < l->end ? l->src + t * job->s0 : NULL;
        any = any ? any : p[q];
    }
    for (int q = 0; q < streams; q++) { /* an idle lane filters a live one's samples */
        p[q] = p[q] ? p[q] : any;
    }
    LOAD_STATE(tvec8);
    int32_t frames[2][64] __attribute__((aligned(64)));
    gather_x8(p, 0, mode, k, frames[0]);
    for (Py_ssize_t c = 0; c < chunks; c++) {
        const int32_t *now = frames[c & 1];
        /* read back from memory, not forwarded in registers by the compiler */
        __asm__("" : "+m"(frames));
        tvec8 x[8];
        for (int f = 0; f < 8; f++) {
            x[f] = k == KIND_FLOAT32
                       ? (tvec8)_mm512_cvtps_pd(_mm256_load_ps((const float *)(now + 8 * f)))
                       : (tvec8)_mm512_cvtepi32_pd(_mm256_load_si256((const void *)(now + 8 * f)));
        }
        if (c + 1 < chunks || tail) {
            gather_x8(p, (c + 1) * advance, mode, k, frames[(c + 1) & 1]);
        }
        FILTER_ROTATED(x[0], v1, v2, v3, v4);
        FILTER_ROTATED(x[1], v4, v1, v2, v3);
        FILTER_ROTATED(x[2], v3, v4, v1, v2);
        FILTER_ROTATED(x[3], v2, v3, v4, v1);
        FILTER_ROTATED(x[4], v1, v2, v3, v4);
        FILTER_ROTATED(x[5], v4, v1, v2, v3);
        FILTER_ROTATED(x[6], v3, v4, v1, v2);
        FILTER_ROTATED(x[7], v2, v3, v4, v1);
    }
    if (tail) { /* the first `tail` frames of one chunk more (read whole: see group8) */
        const int32_t *now = frames[chunks & 1];
        __asm__("" : "+m"(frames));
        for (int f = 0; f < tail; f++) {
            const void *at = now + 8 * f;
            tvec8 xv = k == KIND_FLOAT32 ? (tvec8)_mm512_cvtps_pd(_mm256_load_ps(at))
                                         : (tvec8)_mm512_cvtepi32_pd(_mm256_load_si256(at));
            FILTER_STEP(xv);
        }
    }
    STORE_STATE(tvec8);
}
#define FUSED8 fused_x8
#endif
/* The register path of each width: the generic fused##lanes (DEFINE_GROUP) but for 8. */
#define FUSED2 fused2
#define FUSED4 fused4

/* Zeros an idle (or ended) lane reads in PLANAR and STEREO mode. */
static const char idle_samples[128] __attribute__((aligned(64)));

/* Per vector width `lanes`: the filter over transposed samples in memory (ROWS mode and the
 * frames of a run that do not fill a vector of frames), the register-only path of PLANAR and
 * STEREO mode, and a group of up to `lanes` lanes from their start to their end. */
#define DEFINE_GROUP(lanes, target)                                                        \
    typedef int32_t i32x##lanes __attribute__((vector_size(4 * (lanes))));                 \
    typedef float f32x##lanes __attribute__((vector_size(4 * (lanes))));                   \
                                                                                           \
    target static inline __attribute__((always_inline)) void                               \
    filter##lanes(const double *restrict x, Py_ssize_t len, const double *co,              \
                  double *restrict v, double *restrict sums) {                             \
        LOAD_STATE(tvec##lanes);                                                           \
        _Pragma("GCC unroll 4")                                                            \
        for (Py_ssize_t i = 0; i < len; i++) {                                             \
            tvec##lanes xv;                                                                \
            memcpy(&xv, x + i * (lanes), sizeof xv);                                       \
            FILTER_STEP(xv);                                                               \
        }                                                                                  \
        STORE_STATE(tvec##lanes);                                                          \
    }                                                                                      \
                                                                                           \
    /* `lanes` consecutive samples at p as doubles. */                                     \
    target static inline __attribute__((always_inline)) tvec##lanes                        \
    load##lanes(const char *p, const enum kind k) {                                        \
        tvec##lanes out;                                                                   \
        if (k == KIND_INT16) {                                                             \
            out = widen16_##lanes(p);                                                      \
        } else if (k == KIND_INT32) {                                                      \
            i32x##lanes raw;                                                               \
            memcpy(&raw, p, sizeof raw);                                                   \
            out = __builtin_convertvector(raw, tvec##lanes);                               \
        } else {                                                                           \
            f32x##lanes raw;                                                               \
            memcpy(&raw, p, sizeof raw);                                                   \
            out = __builtin_convertvector(raw, tvec##lanes);                               \
        }                                                                                  \
        return out;                                                                        \
    }                                                                                      \
                                                                                           \
    /* `chunks` x `lanes` frames from loop time t, no event among them: loaded a vector    \
     * per lane (PLANAR) or two per pair (STEREO), transposed and filtered in registers. */ \
    target static inline __attribute__((always_inline)) void                               \
    fused##lanes(const struct job *job, const struct lane *ln, int n, Py_ssize_t t,        \
                 Py_ssize_t chunks, Py_ssize_t tail, const enum mode mode,                 \
                 const enum kind k, double *restrict v, double *restrict sums) {           \
        (void)tail; /* 0: only fused_x8 takes a run's last partial vector */               \
        const double *co = job->filt;                                                      \
        const Py_ssize_t item = k == KIND_INT16 ? 2 : 4;                                   \
        const char *p[lanes];                                                              \
        Py_ssize_t advance[lanes];                                                         \
        const int streams = mode == MODE_STEREO ? (lanes) / 2 : (lanes);                   \
        const int per = mode == MODE_STEREO ? 2 : 1; /* lanes per stream */                \
        for (int q = 0; q < streams; q++) {                                                \
            const struct lane *l = &ln[q * per];                                           \
            int live = q * per < n && t < l->end;                                          \
            p[q] = live ? l->src + t * job->s0 : idle_samples;                             \
            advance[q] = live ? (lanes) * job->s0 : 0;                                     \
        }                                                                                  \
        LOAD_STATE(tvec##lanes);                                                           \
        for (Py_ssize_t c = 0; c < chunks; c++) {                                          \
            tvec##lanes x[lanes];                                                          \
            if (mode == MODE_STEREO) {                                                     \
                tvec##lanes a[lanes];                                                      \
                for (int q = 0; q < (lanes) / 2; q++) {                                    \
                    const char *at = p[q] + c * advance[q];                                \
                    a[q] = load##lanes(at, k);                                             \
                    a[q + (lanes) / 2] = load##lanes(at + (advance[q] ? (lanes) * item : 0), \
                                                     k);                                   \
                }                                                                          \
                pairs_regs##lanes(a, x);                                                   \
                pairs_regs##lanes(a + (lanes) / 2, x + (lanes) / 2);                       \
            } else {                                                                       \
                for (int l = 0; l < (lanes); l++) {                                        \
                    x[l] = load##lanes(p[l] + c * advance[l], k);                          \
                }                                                                          \
                transpose_regs##lanes(x);                                                  \
            }                                                                              \
            for (int f = 0; f < (lanes); f++) {                                            \
                FILTER_STEP(x[f]);                                                         \
            }                                                                              \
        }                                                                                  \
        STORE_STATE(tvec##lanes);                                                          \
    }                                                                                      \
                                                                                           \
    /* FRAME mode: `count` frames from loop time t, one vector load each. */               \
    target static inline __attribute__((always_inline)) void                               \
    frames##lanes(const struct job *job, const struct lane *ln, Py_ssize_t t,              \
                  Py_ssize_t count, const enum kind k, double *restrict v,                 \
                  double *restrict sums) {                                                 \
        const double *co = job->filt;                                                      \
        const char *p = ln[0].src + t * job->s0;                                           \
        const Py_ssize_t s0 = job->s0;                                                     \
        LOAD_STATE(tvec##lanes);                                                           \
        _Pragma("GCC unroll 4")                                                            \
        for (Py_ssize_t i = 0; i < count; i++) {                                           \
            tvec##lanes xv = load##lanes(p + i * s0, k);                                   \
            FILTER_STEP(xv);                                                               \
        }                                                                                  \
        STORE_STATE(tvec##lanes);                                                          \
    }                                                                                      \
                                                                                           \
    target static void group##lanes(const struct job *job, const struct lane *ln, int n) { \
        double rows[lanes][TILE] __attribute__((aligned(64)));                             \
        double x[TILE * (lanes)] __attribute__((aligned(64)));                             \
        double span[SPAN];                                                                 \
        double v[4 * (lanes)], sums[lanes];                                                \
        struct clock clocks[lanes];                                                        \
        const Py_ssize_t tile = job->mode == MODE_FRAMES && SPAN / job->channels < TILE    \
                                    ? SPAN / job->channels : TILE;                         \
        Py_ssize_t stop = 0;                                                               \
        memset(v, 0, sizeof v);                                                            \
        memset(sums, 0, sizeof sums);                                                      \
        for (int l = 0; l < n; l++) {                                                      \
            stop = ln[l].end > stop ? ln[l].end : stop;                                    \
            clock_start(job, &ln[l], &clocks[l]);                                          \
            if (ln[l].count_from == 0) { /* segment 0 continues the carried state */       \
                const double *s = job->st + ln[l].channel * STATE;                         \
                for (int d = 0; d < 4; d++) {                                              \
                    v[d * (lanes) + l] = s[d] / job->inv;                                  \
                }                                                                          \
                sums[l] = s[4] / job->out2;                                                \
            }                                                                              \
        }                                                                                  \
        memset(rows, 0, sizeof rows); /* idle lanes, and the tail of a partial vector */   \
        for (Py_ssize_t t = 0; t < stop;) {                                                \
            /* registers only: a run goes on to the next event (its last frames, fewer    \
             * than a vector of them, through the tile) */                                 \
            Py_ssize_t next = job->mode >= MODE_PLANAR || t + tile > stop ? stop : t + tile; \
            for (int l = 0; l < n; l++) {                                                  \
                next = clocks[l].at < next ? clocks[l].at : next;                          \
            }                                                                              \
            Py_ssize_t chunks = job->mode < MODE_PLANAR ? 0 : (next - t) / (lanes);        \
            Py_ssize_t tail = 0; /* frames short of a vector, in registers (8 lanes) */     \
            if ((lanes) == 8 && (job->mode == MODE_PLANAR || job->mode == MODE_STEREO) &&  \
                (next - t) % (lanes)) {                                                    \
                /* a whole vector of frames is read: each live lane's must be in the block */ \
                Py_ssize_t reach = t + (chunks + 1) * (lanes);                             \
                tail = (next - t) % (lanes);                                               \
                for (int l = 0; l < n; l++) {                                              \
                    if (t < ln[l].end && ln[l].origin + reach > job->frames) {             \
                        tail = 0;                                                          \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            if (job->mode == MODE_FRAME) {                                                 \
                /* a frame's vector reads up to two frames on: not at the block's end */   \
                Py_ssize_t safe = (next < ln[0].end - 2 ? next : ln[0].end - 2) - t;       \
                chunks = 0;                                                                \
                if (safe > 0) {                                                            \
                    if (job->k == KIND_INT16) {                                            \
                        frames##lanes(job, ln, t, safe, KIND_INT16, v, sums);              \
                    } else if (job->k == KIND_INT32) {                                     \
                        frames##lanes(job, ln, t, safe, KIND_INT32, v, sums);              \
                    } else {                                                               \
                        frames##lanes(job, ln, t, safe, KIND_FLOAT32, v, sums);            \
                    }                                                                      \
                    t += safe; /* the rest below, through memory */                        \
                }                                                                          \
            }                                                                              \
            if (chunks || tail) {                                                          \
                switch (job->mode * 3 + job->k) {                                          \
                case MODE_PLANAR * 3 + KIND_INT16:                                         \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_PLANAR, KIND_INT16, v, sums); \
                    break;                                                                 \
                case MODE_PLANAR * 3 + KIND_INT32:                                         \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_PLANAR, KIND_INT32, v, sums); \
                    break;                                                                 \
                case MODE_PLANAR * 3 + KIND_FLOAT32:                                       \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_PLANAR, KIND_FLOAT32, v, sums); \
                    break;                                                                 \
                case MODE_STEREO * 3 + KIND_INT16:                                         \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_STEREO, KIND_INT16, v, sums); \
                    break;                                                                 \
                case MODE_STEREO * 3 + KIND_INT32:                                         \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_STEREO, KIND_INT32, v, sums); \
                    break;                                                                 \
                default:                                                                   \
                    FUSED##lanes(job, ln, n, t, chunks, tail, MODE_STEREO, KIND_FLOAT32, v, sums); \
                    break;                                                                 \
                }                                                                          \
            }                                                                              \
            Py_ssize_t from = t + chunks * (lanes) + tail, len = next - from;              \
            if (len > 0) {                                                                 \
                if (job->mode == MODE_FRAMES) {                                            \
                    for (int l = 0, r; l < n; l = r) { /* the lanes of one segment */      \
                        for (r = l + 1; r < n && ln[r].origin == ln[l].origin; r++) {      \
                        }                                                                  \
                        convert_frames(job, ln, l, r, from, len, span, rows);              \
                    }                                                                      \
                } else {                                                                   \
                    for (int l = 0; l < n; l++) {                                          \
                        convert_lane(job, &ln[l], from, len, rows[l]);                     \
                    }                                                                      \
                }                                                                          \
                transpose##lanes(rows, len, x);                                            \
                filter##lanes(x, len, job->filt, v, sums);                                   \
            }                                                                              \
            t = next;                                                                      \
            for (int l = 0; l < n; l++) {                                                  \
                if (clocks[l].at == t) {                                                   \
                    lane_events(job, &ln[l], &clocks[l], t, v + l, lanes, &sums[l]);       \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

/* rows[l][i] -> x[i * lanes + l] for i < len, whole vectors at a time (rows hold TILE). */
#define DEFINE_TRANSPOSE(lanes)                                                            \
    static inline __attribute__((always_inline)) void                                      \
    transpose##lanes(double (*rows)[TILE], Py_ssize_t len, double *x) {                    \
        for (Py_ssize_t i = 0; i < len; i += (lanes)) {                                    \
            tvec##lanes r[lanes];                                                          \
            for (int l = 0; l < (lanes); l++) {                                            \
                memcpy(&r[l], rows[l] + i, sizeof r[l]);                                   \
            }                                                                              \
            transpose_regs##lanes(r);                                                      \
            memcpy(x + (lanes) * i, r, sizeof r);                                          \
        }                                                                                  \
    }

DEFINE_TRANSPOSE(2)
DEFINE_TRANSPOSE(4)
DEFINE_TRANSPOSE(8)

DEFINE_GROUP(2, )
#ifdef WF_X86_SIMD
#define X86_KERNELS 1
DEFINE_GROUP(4, __attribute__((target("avx2,fma"))))
DEFINE_GROUP(8, __attribute__((target("avx512f,fma"))))
#endif

typedef void (*group_fn)(const struct job *, const struct lane *, int);

/* The widest vector this CPU runs (or `want`, 0 for the widest; 0 when it cannot). */
static int choose_width(int want) {
    int widest = 2;
#ifdef X86_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
        widest = 8;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        widest = 4;
    }
#endif
    if (want == 0) {
        return widest;
    }
    return (want == 2 || want == 4 || want == 8) && want <= widest ? want : 0;
}

static group_fn group_for(int width) {
#ifdef X86_KERNELS
    if (width == 8) {
        return group8;
    }
    if (width == 4) {
        return group4;
    }
#endif
    return group2;
}

/* Frames a segment's filter runs before it counts: 200 ms (see the top of this file). */
static Py_ssize_t priming_frames(Py_ssize_t step) {
    return 2 * step;
}

/* The loop length of each lane when n frames are cut into k segments: segment 0 counts
 * `first` frames, every later one primes then counts first - priming (the last: the rest).
 * 0 when k segments do not fit. */
static Py_ssize_t segment_length(Py_ssize_t n, Py_ssize_t priming, int k) {
    if (k == 1) {
        return n;
    }
    Py_ssize_t first = (n + (k - 1) * priming + k - 1) / k;
    Py_ssize_t middle = first - priming;
    Py_ssize_t last = n - first - (k - 2) * middle;
    return middle >= 1 && last >= 1 ? first : 0;
}

/* The number of segments with the fewest vector steps (`want` if it fits, when given). */
static int choose_segments(Py_ssize_t n, Py_ssize_t priming, int measured, int width,
                           int want) {
    if (want > 0) {
        while (want > 1 && (want * measured > MAX_LANES ||
                            segment_length(n, priming, want) == 0)) {
            want--;
        }
        return want;
    }
    int best = 1;
    double best_cost = (double)((measured + width - 1) / width) * (double)n;
    for (int k = 2; k <= MAX_SEGMENTS && k * measured <= MAX_LANES; k++) {
        Py_ssize_t len = segment_length(n, priming, k);
        double cost = (double)((k * measured + width - 1) / width) * (double)len;
        if (len > 0 && cost < best_cost) {
            best = k;
            best_cost = cost;
        }
    }
    return best;
}

const char wf_kweight_doc[] =
"kweight(samples, inv_scale, coeffs, weights, state, step, window, filled, energies,\n"
"        width=0, segments=0) -> (steps, filled)\n\n"
"K-weight the (frames, channels) block `samples`, each sample times `inv_scale` (a power\n"
"of two: applied exactly to the state and the squares instead; otherwise to rounding).\n"
"`coeffs`: b0..b4, a1..a4; `weights`: per channel (0: not filtered); `state`: channels x 5\n"
"doubles carried between blocks; `filled`: frames of the current step already seen. Each\n"
"completed step of `step` frames writes the weighted mean square of its last `window`\n"
"frames to `energies`; returns how many, and the frames filled in the step now open.\n"
"`width` (2, 4 or 8 doubles per vector) and `segments` (per channel) force what is\n"
"otherwise chosen for the CPU and the block (tests: every path gives the same energies).";

PyObject *wf_kweight(PyObject *self, PyObject *args) {
    PyObject *samples_o, *coeffs_o, *weights_o, *state_o, *energies_o;
    double inv;
    Py_ssize_t step, window, filled;
    int want_width = 0, want_segments = 0;
    if (!PyArg_ParseTuple(args, "OdOOOnnnO|ii", &samples_o, &inv, &coeffs_o, &weights_o,
                          &state_o, &step, &window, &filled, &energies_o, &want_width,
                          &want_segments)) {
        return NULL;
    }
    int width = choose_width(want_width);
    if (width == 0 || want_segments < 0) {
        PyErr_SetString(PyExc_ValueError, "width: 0, 2, 4 or 8 (up to the CPU's); segments >= 0");
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

    double carry[MAX_CHANNELS], filt[8];
    const double b0 = ((const double *)cv.buf)[0];
    if (!filter_form(cv.buf, filt)) {
        PyErr_SetString(PyExc_ValueError, "coeffs: b0 must not be 0");
        goto fail_energies;
    }
    struct job job = {
        .k = k, .s0 = sv.strides[0], .item = sv.itemsize, .channels = ch, .inv = inv, .out2 = inv * inv * b0 * b0, .filt = filt, .weights = wv.buf,
        .st = stv.buf, .energies = ev.buf, .carry = carry, .step = step,
        .quiet = step - window, .filled = filled, .done = steps_max, .frames = n,
    };
    int measured = 0, channels[MAX_CHANNELS];
    for (int c = 0; c < ch; c++) {
        if (job.weights[c] != 0.0) {
            channels[measured++] = c;
        }
    }
    job.mode = sv.strides[0] == sv.itemsize                                    ? MODE_PLANAR
               : ch > 2 && sv.strides[0] == ch * sv.itemsize && sv.strides[1] == sv.itemsize
                   ? MODE_FRAMES
                   : MODE_ROWS;
    int lane_channels = measured;
    if (ch == 2 && sv.strides[0] == 2 * sv.itemsize && sv.strides[1] == sv.itemsize) {
        job.mode = MODE_STEREO; /* both channels, in pairs, even if one is not measured */
        lane_channels = 2;
        channels[0] = 0;
        channels[1] = 1;
    }
    if (job.mode == MODE_FRAMES && ch >= 5 && ch <= width && want_segments <= 1) {
        job.mode = MODE_FRAME; /* every channel, in its place in the frame, one segment */
        lane_channels = ch;
        for (int c = 0; c < ch; c++) {
            channels[c] = c;
        }
    }
    Py_ssize_t priming = priming_frames(step);
    if (n == 0) {
        measured = lane_channels = 0; /* nothing to filter: the state stays as it is */
    }
    int segments = measured && job.mode != MODE_FRAME
                       ? choose_segments(n, priming, lane_channels, width, want_segments)
                       : 1;
    Py_ssize_t first = segment_length(n, priming, segments);
    Py_BEGIN_ALLOW_THREADS
    FTZ_ON
    /* Lanes channel-major, (c0 s0) (c0 s1) ... (c1 s0) ..., or for STEREO segment-major,
     * (L s0) (R s0) (L s1) (R s1) ... */
    struct lane lanes[MAX_LANES];
    int nl = 0;
    for (int i = 0; i < lane_channels * segments; i++) {
        int stereo = job.mode == MODE_STEREO;
        int s, c;
        if (stereo) {
            s = i / 2;
            c = i % 2;
        } else if (job.mode == MODE_FRAMES || job.mode == MODE_FRAME) { /* segment-major */
            s = i / lane_channels;
            c = channels[i % lane_channels];
        } else {
            s = i % segments;
            c = channels[i / segments];
        }
        Py_ssize_t begin = s == 0 ? 0 : first + (s - 1) * (first - priming);
        Py_ssize_t stop = s == segments - 1 ? n : s == 0 ? first : begin + first - priming;
        struct lane *ln = &lanes[nl++];
        ln->origin = s == 0 ? 0 : begin - priming;
        ln->count_from = s == 0 ? 0 : priming;
        ln->end = stop - ln->origin;
        ln->channel = c;
        ln->carries = s == segments - 1;
        ln->src = (const char *)sv.buf + ln->origin * sv.strides[0] + c * sv.strides[1];
        carry[c] = 0.0;
    }
    for (Py_ssize_t i = 0; i < steps_max; i++) {
        job.energies[i] = 0.0;
    }
    group_fn run = group_for(width);
    for (int l = 0; l < nl; l += width) {
        run(&job, lanes + l, nl - l < width ? nl - l : width);
    }
    for (int c = 0; c < ch && n > 0; c++) {
        if (job.weights[c] != 0.0) {
            job.st[c * STATE + 4] = carry[c];
        }
    }
    for (Py_ssize_t i = 0; i < steps_max; i++) {
        job.energies[i] /= (double)window;
    }
    for (int c = 0; c < ch * STATE; c++) { /* as libebur128 after every block */
        if (fabs(job.st[c]) < DBL_MIN) {
            job.st[c] = 0.0;
        }
    }
    FTZ_OFF
    Py_END_ALLOW_THREADS
    filled = (filled + n) % step;

    PyBuffer_Release(&ev);
    PyBuffer_Release(&stv);
    PyBuffer_Release(&wv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&sv);
    return Py_BuildValue("nn", steps_max, filled);

fail_energies:
    PyBuffer_Release(&ev);
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
