"""Models: LSTM language model, PreResNet, ResNet-20/18 and VGG-11 for CIFAR (width-configurable).

    build_model("resnet20", 10, widths=(8, 16, 32), generator=g)   the one registry of image models by name
    build_model("vgg11", 100, width_fraction=0.25)                 a fraction of full width, rounded as growth rounds

Imports are inside the function so that `import pipeline.models.<x>` stays as light as the module it names.
"""
from __future__ import annotations

IMAGE_MODELS = ("preresnet<6n+2>", "resnet20", "resnet18", "vgg11")
CONV_INITS = ("he_fan_out", "he_fan_in", "torch_default")  # the convolutions' initialisation (pipeline.models.init)
WIDTH_GROUPS = {"preresnet": 3, "resnet20": 3, "resnet18": 4, "vgg11": 8}  # entries of `widths` per model family


def width_groups(name: str) -> int:
    """How many widths a model takes (preresnet<depth> is the preresnet family)."""
    return WIDTH_GROUPS["preresnet" if name.startswith("preresnet") else name]


def build_model(name: str, num_classes: int, widths=None, generator=None, width_fraction: float | None = None,
                conv_init: str = "he_fan_out"):
    """An image classifier with features()/head by name: preresnet<depth> (e.g. preresnet56), resnet20, resnet18,
    vgg11; at `widths` (default: the model's own), or at `width_fraction` of its default widths rounded to pairs
    (pipeline.models.widths.scaled_widths). `generator` seeds the initialisation (None: torch's global RNG);
    `conv_init` "he_fan_out" is the models' own (He et al.); "he_fan_in" and "torch_default" re-draw the
    convolutions (pipeline.models.init)."""
    from . import preresnet, resnet, vgg
    from .widths import scaled_widths

    builders = {"resnet20": resnet.ResNet20, "resnet18": resnet.ResNet18, "vgg11": vgg.VGG11}
    depth = name[len("preresnet"):] if name.startswith("preresnet") else None
    if name not in builders and not (depth and depth.isdigit()):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(IMAGE_MODELS)}")
    if widths is not None and width_fraction is not None:
        raise ValueError(f"build_model {name!r}: give widths or width_fraction, not both")
    if width_fraction is not None:
        default = preresnet.DEFAULT_WIDTHS if depth else builders[name].DEFAULT_WIDTHS
        widths = scaled_widths(default, width_fraction)
    if conv_init not in CONV_INITS:
        raise ValueError(f"build_model {name!r}: conv_init must be one of {CONV_INITS}, got {conv_init!r}")
    if depth:
        kwargs = {} if widths is None else {"widths": tuple(widths)}
        model = preresnet.preresnet(int(depth), num_classes, generator=generator, **kwargs)
    else:
        model = builders[name](num_classes, None if widths is None else tuple(widths), generator=generator)
    if conv_init != "he_fan_out":
        from .init import redraw_convs

        redraw_convs(model, conv_init, generator)
    return model
