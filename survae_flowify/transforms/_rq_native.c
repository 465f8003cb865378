/* The shared-knot spline kernel's forward direction (_rq_kernel.py) in C: its tables, the
 * per-entry loops and both backwards.
 *
 * Same formulas, same table and same grid lookup as _rq_kernel.py (its module docstring has
 * the mathematics); each entry is one pass over memory instead of about a dozen, and the O(K + M)
 * tables are built and differentiated here rather than by some forty small torch operations.
 * Compiled on first use by _rq_native.py (plain C, no PyTorch headers, called through ctypes on
 * raw pointers of contiguous CPU tensors).
 *
 * Layout. `table` is the forward column table with one row of 8 per column: column c's
 * coefficients (x_k, a0, a1, b1, b2, c2, y_k) at table[8c .. 8c+6], so one entry reads one 32-
 * or 64-byte run. `ahead` is the grid's (M+2,) lookup table; `scale`, `offset`, `max_cell` map
 * an input to its grid cell exactly as _locate does: cell = floor(clamp(x*scale + offset,
 * 0, max_cell)), NaN to cell 0 (the identity tail, whose output stays NaN).
 *
 * forward:  out[i] = g(x[i]); ratio[i] = g'(x[i]) (the caller takes the log, vectorised);
 *           col[i] = the entry's column, as int16 (the backward's only per-entry state).
 * backward: grad_x[i] = ∂/∂x of ḡ·g + ℓ̄·log g', and, when acc is not NULL, the seven
 *           coefficients' derivatives summed per column into acc[8c .. 8c+6] (double).
 */
#include <stddef.h>
#include <stdint.h>

/* Entries per block of the backward: its six term buffers stay in the L1 cache. */
#define RQ_BLOCK 256

#define RQ_DEFINE(T, SUFFIX)                                                                     \
    void rq_forward_##SUFFIX(const T *restrict x, int64_t n, const T *restrict table,           \
                             const T *restrict ahead, T scale, T offset, T max_cell,             \
                             T *restrict out, T *restrict ratio, int16_t *restrict col) {        \
        for (int64_t i = 0; i < n; ++i) {                                                        \
            const T xi = x[i];                                                                   \
            T c = xi * scale + offset;                                                           \
            c = c > 0 ? c : 0; /* NaN too */                                                     \
            c = c < max_cell ? c : max_cell;                                                     \
            const int32_t cell = (int32_t)c;                                                     \
            const int32_t j = 2 * cell + (xi >= ahead[cell] ? 1 : 0);                           \
            const T t = xi - table[8 * j];                                                       \
            const T den = 1 + t * (table[8 * j + 3] + table[8 * j + 4] * t);                     \
            const T inv = 1 / den;                                                               \
            const T a0 = table[8 * j + 1], a1 = table[8 * j + 2];                                \
            out[i] = table[8 * j + 6] + t * (a0 + a1 * t) * inv;                                 \
            ratio[i] = (a0 + 2 * t * (a1 + (T)0.5 * table[8 * j + 5] * t)) * (inv * inv);       \
            col[i] = (int16_t)j;                                                                 \
        }                                                                                        \
    }                                                                                            \
                                                                                                 \
    void rq_backward_##SUFFIX(const T *restrict x, const int16_t *restrict col, int64_t n,      \
                              const T *restrict table, const T *restrict g_out,                 \
                              const T *restrict g_log, T *restrict grad_x,                       \
                              double *restrict acc) {                                            \
        /* Per block: a vectorised pass for the per-entry terms, then their per-column sums  \
           (scalar: entries of one vector may share a column). */                            \
        T terms[6][RQ_BLOCK];                                                                    \
        for (int64_t start = 0; start < n; start += RQ_BLOCK) {                                  \
            const int64_t m = n - start < RQ_BLOCK ? n - start : RQ_BLOCK;                       \
            const T *restrict xs = x + start, *restrict go = g_out + start;                      \
            const T *restrict gl = g_log + start;                                                \
            const int16_t *restrict cs = col + start;                                            \
            T *restrict gxs = grad_x + start;                                                    \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                const int32_t j = cs[i];                                                         \
                const T a0 = table[8 * j + 1], a1 = table[8 * j + 2];                            \
                const T b2 = table[8 * j + 4], c2 = table[8 * j + 5];                            \
                const T t = xs[i] - table[8 * j];                                                \
                const T inner = a0 + a1 * t;              /* a0 + a1 t */                        \
                const T slope = table[8 * j + 3] + b2 * t; /* b1 + b2 t */                       \
                const T inv = 1 / (1 + slope * t);                                               \
                const T r = a0 + 2 * t * (a1 + (T)0.5 * c2 * t);                                 \
                const T u = go[i] * inv, v = gl[i] / r;                                          \
                const T p = (gl[i] + (T)0.5 * go[i] * (inner * t * inv)) * inv;                  \
                const T gx = u * (inner + a1 * t) - 2 * p * (slope + b2 * t) + 2 * v * (a1 + c2 * t); \
                gxs[i] = gx;                                                                     \
                const T ut = u * t, pt = p * t;                                                  \
                terms[0][i] = -gx;                                                               \
                terms[1][i] = v + ut;                                                            \
                terms[2][i] = (ut + 2 * v) * t;                                                  \
                terms[3][i] = -2 * pt;                                                           \
                terms[4][i] = -2 * pt * t;                                                       \
                terms[5][i] = v * t * t;                                                         \
            }                                                                                    \
            if (!acc) continue;                                                                  \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                double *restrict s = acc + 8 * (int64_t)cs[i];                                   \
                s[0] += terms[0][i];                                                             \
                s[1] += terms[1][i];                                                             \
                s[2] += terms[2][i];                                                             \
                s[3] += terms[3][i];                                                             \
                s[4] += terms[4][i];                                                             \
                s[5] += terms[5][i];                                                             \
                s[6] += go[i];                                                                   \
            }                                                                                    \
        }                                                                                        \
    }

RQ_DEFINE(float, f32)
RQ_DEFINE(double, f64)

/* ---- The O(K + M) tables: built from the unnormalised parameters, and their backward. ----
 *
 * In double precision, the same steps as rq_tables in _rq_kernel.py (nflows' conventions):
 * sizes_i = min + (1 − min·K)·softmax(u)_i, knots c_0 = −B, c_j = 2B·Σ_{i<j} sizes_i − B,
 * c_K = B, widths w_k = c_{k+1} − c_k (heights alike), derivatives d_k = min_d + softplus(·) with
 * d_0 = d_K from `boundary`. Per bin k the forward coefficients (x_k, a0, a1, b1, b2, c2, y_k)
 * with δ = h/w, s = d_k + d_{k+1} − 2δ: (x_k, d_k, (δ − d_k)/w, s/h, −s/(hw), s/w², y_k). The
 * lookup grid is _lookup's: cell i of width c = 2B/M has the widened lower edge
 * (i − 1)c − B − c/4; below_i counts the knots (in T, the last moved up one ulp) at or under it;
 * ahead_i is the next knot (+∞ if none); columns 2i and 2i+1 hold bins below_i and below_i + 1
 * (capped at the right tail, K + 1). Bin 0 and K + 1 are the identity tails. */

#include <math.h>

static void rq_knots(const double *u, int64_t K, double bound, double min_size, double *sm,
                     double *knots, double *sizes) {
    double top = u[0], total = 0, cum = 0;
    for (int64_t i = 1; i < K; ++i) top = u[i] > top ? u[i] : top;
    for (int64_t i = 0; i < K; ++i) total += (sm[i] = exp(u[i] - top));
    for (int64_t i = 0; i < K; ++i) sm[i] /= total;
    knots[0] = -bound;
    for (int64_t i = 0; i + 1 < K; ++i) {
        cum += min_size + (1 - min_size * K) * sm[i];
        knots[i + 1] = 2 * bound * cum - bound;
    }
    knots[K] = bound;
    for (int64_t i = 0; i < K; ++i) sizes[i] = knots[i + 1] - knots[i];
}

static double rq_softplus(double v) { return v > 0 ? v + log1p(exp(-v)) : log1p(exp(v)); }
static double rq_sigmoid(double v) { return v >= 0 ? 1 / (1 + exp(-v)) : exp(v) / (1 + exp(v)); }

/* Scratch: 7 arrays of K + 1 doubles. */
static void rq_bins(const double *uw, const double *uh, const double *ud, int64_t K, double bound,
                    double min_w, double min_h, double min_d, double boundary, double *s) {
    double *smw = s, *cw = s + (K + 1), *w = s + 2 * (K + 1), *smh = s + 3 * (K + 1);
    double *ch = s + 4 * (K + 1), *h = s + 5 * (K + 1), *d = s + 6 * (K + 1);
    rq_knots(uw, K, bound, min_w, smw, cw, w);
    rq_knots(uh, K, bound, min_h, smh, ch, h);
    d[0] = d[K] = min_d + rq_softplus(boundary);
    for (int64_t i = 1; i < K; ++i) d[i] = min_d + rq_softplus(ud[i - 1]);
}

/* Scratch: rq_bins' 7 arrays of K + 1, then the per-bin coefficients (K + 2 rows of 8, row b =
 * bin b, 0 and K + 1 the tails) and the knots as the lookup compares them (K + 1: x_k rounded to
 * T, the last one moved up one ulp). */
#define RQ_TABLES(T, SUFFIX, NEXT)                                                               \
    void rq_tables_##SUFFIX(const double *uw, const double *uh, const double *ud, int64_t K,    \
                            double bound, double min_w, double min_h, double min_d,              \
                            double boundary, int64_t cells, double *scratch, T *table,           \
                            T *ahead, int32_t *bins) {                                           \
        rq_bins(uw, uh, ud, K, bound, min_w, min_h, min_d, boundary, scratch);                   \
        const double *cw = scratch + (K + 1), *w = scratch + 2 * (K + 1);                        \
        const double *ch = scratch + 4 * (K + 1), *h = scratch + 5 * (K + 1);                    \
        const double *d = scratch + 6 * (K + 1);                                                 \
        double *coef = scratch + 7 * (K + 1), *knots = coef + 8 * (K + 2);                       \
        for (int64_t b = 0; b < K + 2; ++b)                                                      \
            for (int r = 0; r < 8; ++r) coef[8 * b + r] = r == 1; /* identity: a0 = 1 */        \
        for (int64_t k = 0; k < K; ++k) {                                                        \
            double *row = coef + 8 * (k + 1);                                                    \
            const double delta = h[k] / w[k], s = d[k] + d[k + 1] - 2 * delta;                  \
            row[0] = cw[k];                                                                      \
            row[1] = d[k];                                                                       \
            row[2] = (delta - d[k]) / w[k];                                                      \
            row[3] = s / h[k];                                                                   \
            row[4] = -s / (h[k] * w[k]);                                                         \
            row[5] = s / (w[k] * w[k]);                                                          \
            row[6] = ch[k];                                                                      \
            knots[k] = (T)cw[k];                                                                 \
        }                                                                                        \
        knots[K] = NEXT((T)bound);                                                               \
        const double width = 2 * bound / cells;                                                  \
        int64_t below = 0;                                                                       \
        for (int64_t i = 0; i < cells + 2; ++i) {                                                \
            const double edge = (double)(i - 1) * width - (bound + width / 4);                  \
            while (below <= K && knots[below] <= edge) ++below;                                  \
            ahead[i] = below <= K ? (T)knots[below] : (T)INFINITY;                               \
            for (int half = 0; half < 2; ++half) {                                               \
                const int64_t b = below + half < K + 1 ? below + half : K + 1;                  \
                bins[2 * i + half] = (int32_t)b;                                                 \
                for (int r = 0; r < 8; ++r) table[8 * (2 * i + half) + r] = (T)coef[8 * b + r]; \
            }                                                                                    \
        }                                                                                        \
    }

static float rq_next_f32(float v) { return nextafterf(v, INFINITY); }
static double rq_next_f64(double v) { return nextafter(v, INFINITY); }
RQ_TABLES(float, f32, rq_next_f32)
RQ_TABLES(double, f64, rq_next_f64)

/* d/du of Σ over columns of acc · (the columns' coefficients), acc (2(M+2), 8) in double as the
 * per-entry backward leaves it; the gradients of the tails' constant columns are dropped. */
static void rq_knots_backward(const double *sm, int64_t K, double bound, double min_size,
                              const double *g_knots, double *g_u) {
    /* knots c_j = 2B·Σ_{i<j} sizes_i − B for 0 < j < K: g_sizes_i = 2B·Σ_{i<j<K} g_c_j */
    double tail = 0, dot = 0;
    for (int64_t i = K - 1; i >= 0; --i) {
        g_u[i] = 2 * bound * tail * (1 - min_size * K); /* g of softmax_i */
        tail += i >= 1 ? g_knots[i] : 0;
    }
    for (int64_t i = 0; i < K; ++i) dot += sm[i] * g_u[i];
    for (int64_t i = 0; i < K; ++i) g_u[i] = sm[i] * (g_u[i] - dot);
}

void rq_tables_backward(const double *uw, const double *uh, const double *ud, int64_t K,
                        double bound, double min_w, double min_h, double min_d, double boundary,
                        int64_t cells, const double *acc, const int32_t *bins, double *scratch,
                        double *g_uw, double *g_uh, double *g_ud) {
    rq_bins(uw, uh, ud, K, bound, min_w, min_h, min_d, boundary, scratch);
    const double *smw = scratch, *w = scratch + 2 * (K + 1), *smh = scratch + 3 * (K + 1);
    const double *h = scratch + 5 * (K + 1), *d = scratch + 6 * (K + 1);
    /* scratch after the 7 forward arrays: per-bin sums G (K + 2 rows of 8), then g_cw, g_ch, g_d */
    double *G = scratch + 7 * (K + 1), *g_cw = G + 8 * (K + 2), *g_ch = g_cw + (K + 1);
    double *g_d = g_ch + (K + 1);
    for (int64_t i = 0; i < 8 * (K + 2) + 3 * (K + 1); ++i) G[i] = 0;
    for (int64_t c = 0; c < 2 * (cells + 2); ++c)
        for (int r = 0; r < 7; ++r) G[8 * bins[c] + r] += acc[8 * c + r];
    for (int64_t k = 0; k < K; ++k) {
        const double *g = G + 8 * (k + 1);
        const double wk = w[k], hk = h[k], delta = hk / wk, s = d[k] + d[k + 1] - 2 * delta;
        const double g_s = g[3] / hk - g[4] / (hk * wk) + g[5] / (wk * wk);
        const double g_delta = g[2] / wk - 2 * g_s;
        const double g_w = -g[2] * (delta - d[k]) / (wk * wk) + g[4] * s / (hk * wk * wk)
                           - 2 * g[5] * s / (wk * wk * wk) - g_delta * hk / (wk * wk);
        const double g_h = -g[3] * s / (hk * hk) + g[4] * s / (hk * hk * wk) + g_delta / wk;
        g_cw[k] += g[0] - g_w;
        g_cw[k + 1] += g_w;
        g_ch[k] += g[6] - g_h;
        g_ch[k + 1] += g_h;
        g_d[k] += g[1] - g[2] / wk + g_s;
        g_d[k + 1] += g_s;
    }
    rq_knots_backward(smw, K, bound, min_w, g_cw, g_uw);
    rq_knots_backward(smh, K, bound, min_h, g_ch, g_uh);
    for (int64_t i = 1; i < K; ++i) g_ud[i - 1] = g_d[i] * rq_sigmoid(ud[i - 1]);
}
