"""Distillation students: the teacher with some decoder layers dropped, weights copied."""

from __future__ import annotations

import copy


def student_layer_indices(teacher_layers: int, student_layers: int | None) -> list[int]:
    """Every other layer by default; otherwise `student_layers` spread evenly, first and last kept."""
    if student_layers is None:
        return list(range(0, teacher_layers, 2))
    if not 1 <= student_layers < teacher_layers:
        raise ValueError(f"--student-layers must be between 1 and {teacher_layers - 1} "
                         f"(the teacher has {teacher_layers})")
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return sorted({round(i * step) for i in range(student_layers)})


def build_student(teacher, student_layers: int | None):
    import torch

    layers = getattr(getattr(teacher, "model", None), "layers", None)
    if layers is None:
        raise ValueError("distillation supports decoders with model.layers (Llama-style) only")
    indices = student_layer_indices(len(layers), student_layers)
    student = copy.deepcopy(teacher)
    kept = torch.nn.ModuleList([student.model.layers[i] for i in indices])
    for new_index, layer in enumerate(kept):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position
    student.model.layers = kept
    student.config.num_hidden_layers = len(indices)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in indices]
    return student, indices
