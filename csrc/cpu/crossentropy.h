// Softmax and cross-entropy, fused, over N rows of V logits.
#pragma once

#include <cstdint>

namespace minigrad {

// probs = softmax(logits) per row; returns the mean over rows of logsumexp(logits_n) - logits_n[targets_n].
// logits, probs (N, V); targets (N,) in [0, V) (the caller checks the range).
template <class T>
double crossentropy_forward(T* probs, const T* logits, const int64_t* targets, int64_t N, int64_t V);

// dlogits = dloss * (probs - onehot(targets)) / N.  probs, dlogits (N, V); targets (N,) in [0, V).
template <class T>
void crossentropy_backward(T* dlogits, const T* probs, const int64_t* targets, double dloss, int64_t N, int64_t V);

}  // namespace minigrad
