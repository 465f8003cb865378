r"""``flowify(module)``: turn an ordinary ``torch.nn`` network into a flowified one (DESIGN.md §3, §11).

``flowify`` converts an ``nn.Sequential`` part by part, and any other network by tracing its own
``forward`` with ``torch.fx`` (nested modules included) and converting the graph node by node:

==================================================  ===============================================
network                                             flowified
==================================================  ===============================================
``nn.Linear``                                       :class:`~survae_flowify.layers.linear.Linear`
                                                    (weights kept via SVD; any in/out sizes)
``nn.Conv2d`` (zero padding, ``stride ≤ kernel``)   :class:`~survae_flowify.layers.conv.Conv2d`:
                                                    the padding becomes noise on every side
``h + f(h)``                                        :class:`~survae_flowify.layers.residual.Residual`
``a(h) + b(h)`` (projection shortcut)               ``Repeat(2) → Parallel(a, b) → AddHalves``
``torch.cat([a(h), b(h)], dim=1)``                  ``Repeat(2) → Parallel(a, b)``
``nn.BatchNorm1d/2d`` (running statistics)          ``ElementwiseAffine`` (per channel,
                                                    trainable)
``nn.AvgPool2d(k)``, ``nn.AdaptiveAvgPool2d``,      :class:`~survae_flowify.layers.avgpool.AvgPool2d`
``F.avg_pool2d``, ``x.mean((2, 3))``                (exact; an inverse density for the rest)
``nn.MaxPool2d(k)``, ``F.max_pool2d``               ``survae_flowify.surjections.MaxPool2d``
``nn.LeakyReLU``, ``F.leaky_relu`` (slope > 0)      :class:`~survae_flowify.transforms.LeakyReLU`
``nn.ELU``/``F.elu``, ``nn.Tanh``/``torch.tanh``,   ``ELU``, ``Tanh``, ``Sigmoid``, ``Softplus``
``nn.Sigmoid``/``torch.sigmoid``,                   (:mod:`survae_flowify.transforms.activations`)
``nn.Softplus``/``F.softplus``
``nn.Flatten``, ``torch.flatten``, ``x.flatten``,   :class:`~survae_flowify.transforms.Flatten` /
``view``, ``reshape``, ``squeeze``, ``unsqueeze``,  :class:`~survae_flowify.transforms.Reshape`
``nn.Unflatten``
``nn.Identity``, ``nn.Dropout``, ``F.dropout``,     dropped (dropout is the identity in eval mode)
``contiguous``
a flowified layer (in an ``nn.Sequential``)         kept as it is
==================================================  ===============================================

Refused, with a ``ValueError`` that names the layer or node (its qualified name and, for a
traced network, the source line) and the invertible alternative: ``ReLU``, ``GELU``, ``SiLU``,
``softmax`` and other non-injective maps; dilated or grouped convolutions; overlapping or padded
pooling; a value used other than by two branches that meet in ``a(h) + b(h)`` or
``torch.cat([a(h), b(h)], dim=1)`` (either may be ``h``); anything without a converter. A
module whose ``forward`` fx cannot trace (data-dependent control flow) gets an error
that says why and suggests ``register_converter``.

``register_converter(nn_type, fn)`` adds a layer type: ``fn(module, **ctx)`` returns a
:class:`~survae_flowify.algebra.transform.Transform` (or ``None`` for the identity), where
``ctx`` holds ``keep_weights``, ``input_shape`` (the event shape reaching the layer, or ``None``
when unknown) and the ``layer_kwargs`` given to :func:`flowify`. A registered type is converted
whole, never traced.

With ``keep_weights=True``, under :func:`survae_flowify.noise_off` and in eval mode the flowified
network computes the same function as the original, provided no convolution drops image pixels
(a flowified convolution pads the image so that its kernel tiles it, which enlarges the output
map where ``nn.Conv2d`` would ignore the last rows).
"""

from survae_flowify.conversion import activations, linear, norm, pool, structure  # noqa: F401 (registers)
from survae_flowify.conversion.flowify import flowify
from survae_flowify.conversion.registry import register_converter

__all__ = ["flowify", "register_converter"]
