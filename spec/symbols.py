"""The SymPy symbols every rule is written in.

Names follow PyTorch's constructor arguments, so a rule reads like the docs and an adapter can map
hyperparameters by name.
"""

import sympy as sp

# Parameter, gradient and step counter (t = 1 on the first update).
theta = sp.Symbol("theta", real=True)
g = sp.Symbol("g", real=True)
t = sp.Symbol("t", integer=True, positive=True)

# State carried between steps (values before this update).
m = sp.Symbol("m", real=True)  # first moment / momentum buffer
v = sp.Symbol("v", nonnegative=True)  # second moment
vmax = sp.Symbol("vmax", nonnegative=True)  # AMSGrad's running maximum
buf = sp.Symbol("buf", real=True)  # SGD momentum buffer
accum = sp.Symbol("accum", nonnegative=True)  # Adagrad's sum of squares
gavg = sp.Symbol("gavg", real=True)  # centered RMSProp's gradient average
u = sp.Symbol("u", nonnegative=True)  # Adamax's exponentially weighted infinity norm

# Hyperparameters.
lr = sp.Symbol("lr", nonnegative=True)
initial_lr = sp.Symbol("initial_lr", positive=True)
beta1 = sp.Symbol("beta1", nonnegative=True)
beta2 = sp.Symbol("beta2", nonnegative=True)
eps = sp.Symbol("eps", positive=True)
weight_decay = sp.Symbol("weight_decay", nonnegative=True)
momentum = sp.Symbol("momentum", nonnegative=True)
dampening = sp.Symbol("dampening", nonnegative=True)
alpha = sp.Symbol("alpha", nonnegative=True)
lr_decay = sp.Symbol("lr_decay", nonnegative=True)

#: Symbols whose values are the same for every element: scalar arithmetic, not tensor arithmetic.
SCALARS = frozenset(
    {t, lr, initial_lr, beta1, beta2, eps, weight_decay, momentum, dampening, alpha, lr_decay}
)
