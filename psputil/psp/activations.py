"""Reading post-synaptic potentials (PSPs): the inputs of every ``nn.ReLU`` module."""

from contextlib import contextmanager

from torch import nn


def relu_modules(model):
    """``[(module path, nn.ReLU)]`` of `model`, in forward order of registration.

    Raises:
        ValueError: the model has no ``nn.ReLU`` module (nothing to analyse).
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.ReLU modules; PSP analyses need every hidden "
            "activation to be its own nn.ReLU instance (as in psputil.models)"
        )
    return found


@contextmanager
def capture_psps(model, sink):
    """Within the block, every forward pass writes ``sink[relu path] = its input tensor``.

    The hooks are removed on exit, also when the block raises. Works inside
    ``torch.func.functional_call``/``vmap``: the captured tensors can be returned
    from the vmapped function.
    """
    handles = []
    try:
        for name, module in relu_modules(model):
            handles.append(module.register_forward_hook(_writer(sink, name)))
        yield sink
    finally:
        for handle in handles:
            handle.remove()


def _writer(sink, name):
    def hook(module, inputs, output):
        sink[name] = inputs[0]

    return hook
