"""minigrad.optim: SGD, AdamW, global-norm clipping and the warmup-then-cosine learning rate."""

import math

from minigrad.backend import get_array_module, to_device
from minigrad.dispatch import kernels_for


class Optimizer:
    """Holds parameter groups: a list of Tensors, or a list of dicts {"params": [...], **hyperparameters}."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            if group["lr"] < 0:
                raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays

    def parameters(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set .grad to None (the default, no memory traffic) or fill it with zeros."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def state_dict(self):
        """{"hyper": [group hyperparameters], "step": int, "buffers": {name: [array or None per parameter]}}."""
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        buffers = {
            name: [to_device(self.state[id(p)][name], "cpu") if id(p) in self.state else None for p in self.parameters()]
            for name in self.buffer_names
        }
        return {"hyper": hyper, "step": getattr(self, "step_count", 0), "buffers": buffers}

    def load_state_dict(self, state):
        """Restore hyperparameters, step count and buffers; the parameters must match in number and shape."""
        params = self.parameters()
        if len(state["hyper"]) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: {len(state['hyper'])} parameter groups saved, this optimizer has {len(self.param_groups)}"
            )
        for group, hyper in zip(self.param_groups, state["hyper"]):
            group.update(hyper)
        self.step_count = int(state["step"])
        self.state = {}
        for name in self.buffer_names:
            saved = state["buffers"][name]
            if len(saved) != len(params):
                raise ValueError(f"load_state_dict: {len(saved)} saved '{name}' buffers for {len(params)} parameters")
            for p, array in zip(params, saved):
                if array is None:
                    continue
                if array.shape != p.shape:
                    raise ValueError(f"load_state_dict: a '{name}' buffer has shape {array.shape}, its parameter {p.shape}")
                self.state.setdefault(id(p), {})[name] = to_device(array.astype(p.dtype), p.device)


class SGD(Optimizer):
    """buf <- momentum buf + g;  p <- p - lr buf  (PyTorch's form; momentum=0 is plain SGD)."""

    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.step_count = 0

    def step(self):
        self.step_count += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["momentum"]:
                    state = self.state.setdefault(id(p), {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = p.grad.copy()
                    else:
                        state["momentum_buffer"] *= group["momentum"]
                        state["momentum_buffer"] += p.grad
                    update = state["momentum_buffer"]
                p.data -= group["lr"] * update


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), at step t = 1, 2, ...:

    p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).

    The decay shrinks the weights directly instead of being added to g, so it is not rescaled by
    1/sqrt(v_hat). One fused kernel call per parameter group updates every parameter in place.
    """

    buffer_names = ("m", "v")

    def __init__(self, params, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamW: betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.step_count = 0

    def step(self):
        self.step_count += 1
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if id(p) not in self.state:
                    xp = get_array_module(p.data)
                    self.state[id(p)] = {"m": xp.zeros_like(p.data), "v": xp.zeros_like(p.data)}
            beta1, beta2 = group["betas"]
            kernels_for(params[0].data).adamw_update(
                [p.data for p in params],
                [p.grad for p in params],
                [self.state[id(p)]["m"] for p in params],
                [self.state[id(p)]["v"] for p in params],
                group["lr"], beta1, beta2, group["eps"], group["weight_decay"], self.step_count,
            )

    def state_of(self, param):
        """What AdamW knows of one parameter: m, v, the step t and the bias-corrected m_hat, v_hat."""
        if id(param) not in self.state:
            raise KeyError("this parameter has no AdamW state yet: call step() after a backward first")
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        beta1, beta2 = group["betas"]
        m, v, t = self.state[id(param)]["m"], self.state[id(param)]["v"], self.step_count
        return {"m": m, "v": v, "step": t, "m_hat": m / (1 - beta1**t), "v_hat": v / (1 - beta2**t)}


def clip_grad_norm_(params, max_norm):
    """Rescale every gradient in place by max_norm / ||g|| when the global norm ||g|| (the L2 norm of
    all gradients as one vector) exceeds max_norm. Returns ||g|| before clipping, as a float."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = kernels_for(grads[0]).global_norm(grads)
    if norm > max_norm:  # NOTE: False for a NaN norm: NaN gradients are left for the caller to see
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g *= scale
    return norm


def lr_at(it, lr, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup lr (it+1)/warmup_iters for it < warmup_iters; then half a cosine from lr down to
    min_lr, reached at it = lr_decay_iters; then min_lr."""
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    if it >= lr_decay_iters:
        return min_lr
    progress = (it - warmup_iters) / (lr_decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
