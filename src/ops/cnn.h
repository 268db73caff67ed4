/* cnn.h: the convolutional-network ops (src/ops/conv.c, batchnorm.c, pool.c), used by the ResNet
 * backbones (src/nn/resnet.c). Tested by tests/test_cnn.c: finite differences and PyTorch 1.13
 * parity (fixtures from tests/py/gen_cnn.py).
 *
 * Layout NCHW: B images, C channels, H x W pixels; "planes" N = B * C when an op treats every
 * channel of every image alike. Argument order as every op in src/internal.h: outputs, saved for
 * backward, inputs, params, sizes. Every backward ACCUMULATES (+=) into its gradient outputs, and
 * any gradient output may be NULL when the caller does not need it. */
#ifndef DINOC_CNN_H
#define DINOC_CNN_H

#include "../internal.h"

/* ---- 2-D convolution (conv.c) ------------------------------------------------------------------ */

/* Geometry of one Conv2d (PyTorch's: weight [K, C / groups, kh, kw], zero padding, no dilation).
 * Fill the inputs and call dinoc_conv2d_dims_set to get OH, OW. */
typedef struct {
    int B, C, H, W;      /* input [B, C, H, W] */
    int K, kh, kw;       /* output channels, kernel */
    int stride, pad;     /* same along both axes */
    int groups;          /* C and K divisible by it */
    int OH, OW;          /* output [B, K, OH, OW], set by dinoc_conv2d_dims_set */
} dinoc_conv2d_dims;

/* Computes OH = (H + 2 pad - kh) / stride + 1 (and OW). 0 if the geometry is invalid (a size <= 0,
 * channels not divisible by groups, or an empty output). */
int    dinoc_conv2d_dims_set(dinoc_conv2d_dims *d);
/* Floats of the im2col workspace the forward and backward need (0 for 1x1 stride-1 unpadded
 * convolutions, which multiply the input directly). */
size_t dinoc_conv2d_col_floats(const dinoc_conv2d_dims *d);
/* out [B, K, OH, OW] = conv(inp [B, C, H, W], w [K, C/g, kh, kw]) + bias [K] (bias may be NULL).
 * col: dinoc_conv2d_col_floats(d) floats of scratch (NULL when that is 0). */
void dinoc_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                          const float *bias, const dinoc_conv2d_dims *d);
/* dinp [B, C, H, W] += J_x^T dout, dw [K, C/g, kh, kw] += J_w^T dout, db [K] += sum of dout over
 * batch and pixels. col: same scratch as the forward (its contents are overwritten). */
void dinoc_conv2d_backward(float *dinp, float *dw, float *db, float *col, const float *dout,
                           const float *inp, const float *w, const dinoc_conv2d_dims *d);

/* ---- BatchNorm2d (batchnorm.c) ------------------------------------------------------------------ */

/* Training mode, as torch.nn.BatchNorm2d.train(): normalises each channel with the biased
 * statistics of the batch (B * HW values), saves mean and rstd = 1 / sqrt(var + eps) [C] for the
 * backward, and updates running_mean / running_var [C] (if not NULL) with
 *   running = (1 - momentum) running + momentum * batch_stat,
 * the variance unbiased (x HW B / (HW B - 1)) as torch does. out may alias inp. */
void dinoc_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                   float *running_var, const float *inp, const float *w,
                                   const float *b, int B, int C, int HW, float eps,
                                   float momentum);
/* Eval mode: out = (inp - running_mean) / sqrt(running_var + eps) * w + b. out may alias inp. */
void dinoc_batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b,
                                  const float *running_mean, const float *running_var, int B,
                                  int C, int HW, float eps);
/* Backward of the training forward (batch statistics), given its saved mean / rstd. dinp must not
 * alias dout. */
void dinoc_batchnorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean,
                              const float *rstd, int B, int C, int HW);

/* ---- ReLU and pooling (pool.c) ------------------------------------------------------------------ */

/* out = max(inp, 0), in place allowed. */
void dinoc_relu_forward(float *out, const float *inp, size_t n);
/* dinp += dout where out > 0 (out: the forward's output, which is > 0 exactly where the input was).
 * dinp may alias dout (then it is masked in place). */
void dinoc_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* Output side of a k x k window, stride s, padding p: (H + 2p - k) / s + 1 (floor, as torch's
 * default ceil_mode=False). */
int dinoc_pool_out_size(int H, int k, int s, int p);
/* Max pooling over N = B * C planes [H, W] -> [OH, OW]; padding counts as -inf (torch). argmax
 * [N, OH, OW] keeps the flat index (within the plane) of the first maximum of each window, as
 * torch picks it; NULL in inference. */
void dinoc_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, int N, int H, int W,
                             int k, int s, int p);
void dinoc_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, int N, int H,
                              int W, int OH, int OW);
/* Average pooling, k x k windows, stride s, no padding (CLIP's anti-aliased AvgPool2d(stride)). */
void dinoc_avgpool2d_forward(float *out, const float *inp, int N, int H, int W, int k, int s);
void dinoc_avgpool2d_backward(float *dinp, const float *dout, int N, int H, int W, int k, int s);
/* Global average pooling: out [N] = mean of each plane of HW values (the ResNet feature). */
void dinoc_global_avgpool_forward(float *out, const float *inp, int N, int HW);
void dinoc_global_avgpool_backward(float *dinp, const float *dout, int N, int HW);

/* CLIP's AttentionPool2d (inference): the B images' final maps x [B, E, HW] become tokens
 * [mean, pixel_1 .. pixel_HW] + pos [HW+1, E]; one query (the mean token, q_proj) attends over all
 * HW+1 tokens (k_proj, v_proj) with NH heads, then c_proj: out [B, O]. w[0..3] = q, k, v, c_proj
 * weights ([E, E] x 3, [O, E]), b[0..3] their biases. scratch: dinoc_attnpool_scratch_floats. */
void   dinoc_attnpool_forward(float *out, float *scratch, const float *x, const float *pos,
                              const float *const w[4], const float *const b[4], int B, int HW,
                              int E, int NH, int O);
size_t dinoc_attnpool_scratch_floats(int B, int HW, int E, int NH);

#endif
