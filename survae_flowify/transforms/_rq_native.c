/* The per-entry loops of the shared-knot spline kernel (_rq_kernel.py), in C.
 *
 * Same formulas, same table and same grid lookup as _SharedSpline in _rq_kernel.py (its
 * module docstring has the mathematics); here each entry is one pass over memory instead of
 * about a dozen. Compiled on first use by _rq_native.py (no PyTorch headers: plain C, called
 * through ctypes on raw pointers of contiguous CPU tensors).
 *
 * Layout. `table` is the forward column table transposed and padded: column c's coefficients
 * (x_k, a0, a1, b1, b2, c2, y_k) at table[8c .. 8c+6], so one entry reads one 32- or
 * 64-byte run. `ahead` is the grid's (M+2,) lookup table; `scale`, `offset`, `max_cell` map
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
