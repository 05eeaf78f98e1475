"""Magnitude pruning. Unstructured zeroes single weights (same dense size and speed: the report
says so); structured removes whole MLP channels or whole attention head groups, so the saved
model is a smaller dense Llama that any loader reads."""

from __future__ import annotations

from typing import Any


def decoder_linears(model) -> list[tuple[str, Any]]:
    import torch

    head = model.get_output_embeddings()
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head]


def prune_unstructured(model, sparsity: float) -> dict[str, Any]:
    """Zero the smallest |w| of every decoder linear layer; returns masks to keep them zero."""
    import torch

    masks = {}
    with torch.no_grad():
        for name, module in decoder_linears(model):
            magnitudes = module.weight.abs().flatten().float()
            cut = int(sparsity * magnitudes.numel())
            if cut == 0:
                continue
            threshold = magnitudes.kthvalue(cut).values
            masks[name] = module.weight.abs() > threshold
            module.weight.mul_(masks[name])
    return masks


def reapply_masks(model, masks: dict[str, Any]):
    import torch

    def apply() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                model.get_submodule(name).weight.mul_(mask)

    return apply


def _layers(model) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not hasattr(layers[0], "mlp") or not hasattr(layers[0], "self_attn"):
        raise ValueError("structured pruning supports Llama-style decoders "
                         "(model.layers[i].mlp / .self_attn) only")
    return list(layers)


def _narrow(linear, keep, dim: int):
    """A new Linear keeping the given output rows (dim 0) or input columns (dim 1)."""
    import torch

    weight = linear.weight.detach().index_select(dim, keep).clone()
    out_features, in_features = weight.shape
    narrowed = torch.nn.Linear(in_features, out_features, bias=linear.bias is not None,
                               dtype=weight.dtype)
    narrowed.weight = torch.nn.Parameter(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        narrowed.bias = torch.nn.Parameter(bias.index_select(0, keep).clone() if dim == 0 else bias.clone())
    return narrowed


def input_magnitudes(model, calibration_ids, suffix: str) -> dict[str, Any]:
    """Mean |input| per feature of every module whose name ends with `suffix`, over the
    calibration tokens. Weight norms alone miss the few channels that carry this model's
    massive activations (removing 5% of MLP channels by weight norm took SmolLM2 from
    perplexity 27 to 4300)."""
    import torch

    sums: dict[str, Any] = {}
    hooks = []
    for name, module in model.named_modules():
        if name.endswith(suffix):
            def record(_module, inputs, _output, name=name):
                flat = inputs[0].detach().float().abs().reshape(-1, inputs[0].shape[-1])
                sums[name] = sums.get(name, 0) + flat.mean(dim=0)
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.inference_mode():
            model(input_ids=calibration_ids.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return sums


def prune_mlp_channels(model, fraction: float, calibration_ids) -> dict[str, Any]:
    """Drop the same number of intermediate channels in every layer, least important first
    (importance = mean |activation| on calibration text x |down_proj column|), so the config
    stays uniform."""
    import torch

    layers = _layers(model)
    width = layers[0].mlp.gate_proj.out_features
    keep_count = max(1, width - int(round(fraction * width)))
    activations = input_magnitudes(model, calibration_ids, "mlp.down_proj")
    for layer in layers:
        mlp = layer.mlp
        name = _module_name(model, mlp.down_proj)
        importance = activations[name] * mlp.down_proj.weight.detach().float().norm(dim=0)
        keep = torch.sort(torch.topk(importance, keep_count).indices).values
        mlp.gate_proj = _narrow(mlp.gate_proj, keep, 0)
        mlp.up_proj = _narrow(mlp.up_proj, keep, 0)
        mlp.down_proj = _narrow(mlp.down_proj, keep, 1)
        mlp.intermediate_size = keep_count
    model.config.intermediate_size = keep_count
    return {"removed": "mlp-channels", "channels_before": width, "channels_after": keep_count,
            "importance": "calibration activations x down_proj column norm"}


def _module_name(model, target) -> str:
    return next(name for name, module in model.named_modules() if module is target)


def prune_head_groups(model, fraction: float, calibration_ids) -> dict[str, Any]:
    """Drop whole key/value head groups (each with its query heads) in every layer, least
    important first (importance = calibration activations entering o_proj x its column norms,
    summed over the group)."""
    import torch

    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_group = heads // kv_heads
    keep_groups = min(kv_heads - 1, max(1, kv_heads - int(round(fraction * kv_heads))))
    if kv_heads < 2:
        raise ValueError("the model has a single key/value head group: no head can be removed")
    activations = input_magnitudes(model, calibration_ids, "self_attn.o_proj")
    for layer in _layers(model):
        attention = layer.self_attn
        group_width = per_group * head_dim
        columns = attention.o_proj.weight.detach().float().norm(dim=0)
        columns = columns * activations[_module_name(model, attention.o_proj)]
        importance = columns.reshape(kv_heads, group_width).sum(dim=1)
        groups = torch.sort(torch.topk(importance, keep_groups).indices).values
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
        q_rows = torch.cat([torch.arange(g * group_width, (g + 1) * group_width)
                            for g in groups.tolist()])
        attention.q_proj = _narrow(attention.q_proj, q_rows, 0)
        attention.k_proj = _narrow(attention.k_proj, kv_rows, 0)
        attention.v_proj = _narrow(attention.v_proj, kv_rows, 0)
        attention.o_proj = _narrow(attention.o_proj, q_rows, 1)
    config.head_dim = head_dim
    config.num_attention_heads = keep_groups * per_group
    config.num_key_value_heads = keep_groups
    return {"removed": "attention-heads", "heads_before": heads,
            "importance": "calibration activations x o_proj column norm",
            "heads_after": keep_groups * per_group, "kv_heads_after": keep_groups}
