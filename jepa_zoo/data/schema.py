"""The schemas of the ``data`` section and of the methods' ``views`` (dependency-free: no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from jepa_zoo.errors import check, check_range


@dataclass(frozen=True)
class DataSource:
    """One ``data=<name>``: what its samples are and how they are found; every reader of a data source
    (the datamodule, the evaluation's splits, the config checks) takes these from :data:`DATA_SOURCES`.

    ``sample``: ``image``, ``clip`` (``[C, T, H, W]`` of ``data.num_frames`` frames) or ``episode`` (frames
    with actions and states, a trajectory batch); ``root``: ``data.root`` is required; ``held_out``: it
    has folder splits, among which the evaluation looks for its test split (``val``, ``test``, ...);
    ``bare_root``: a folder of class folders is its own training split; ``named_by_root``: records
    and tables name it by its folder; ``build``: for a source without that folder layout,
    ``"module:function"`` of ``build(data, transform, seed, train) -> Dataset`` (``train``: the training
    split, else the validation one), which the datamodule calls instead of reading folders.

    A data source outside this package is a module that declares ``SOURCE = DataSource(...)`` (with a
    ``build``), named by ``data.module``; its own settings go in ``data.kwargs``.
    """

    sample: str = "image"
    root: bool = True
    held_out: bool = False
    bare_root: bool = False
    named_by_root: bool = False
    build: Optional[str] = None


SAMPLES = ("image", "clip", "episode")
DATA_SOURCES: Dict[str, DataSource] = {
    "folder": DataSource("image", held_out=True, bare_root=True, named_by_root=True),
    "cifar10": DataSource("image"),  # its JPEG tree, or torchvision's pickled batches (jepa_zoo.data.datamodule)
    "imagenet": DataSource("image", held_out=True),
    "fake": DataSource("image", root=False, build="jepa_zoo.data.datasets:fake_split"),
    "video_folder": DataSource("clip", held_out=True, bare_root=True, named_by_root=True),
    "moving_shapes": DataSource("clip", root=False, build="jepa_zoo.data.moving_shapes:split"),
}
VIDEO_DATA = tuple(n for n, d in DATA_SOURCES.items() if d.sample == "clip")
DATA_NAMES = tuple(DATA_SOURCES)


@dataclass
class DataConfig:
    """Dataset and loader.  ``name``: folder | cifar10 | imagenet | fake (images); video_folder |
    moving_shapes (clips of ``num_frames`` frames, :mod:`jepa_zoo.data.video`)."""

    name: str = "fake"
    module: Optional[str] = None  # a data source outside the package: the module that declares SOURCE
    kwargs: Dict[str, Any] = field(default_factory=dict)  # that source's own settings
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = "val"
    img_size: int = 224
    local_img_size: int = 96
    eval_crop_ratio: float = 0.875
    batch_size: int = 64
    val_batch_size: Optional[int] = None
    num_workers: int = 4
    pin_memory: bool = True
    num_classes: Optional[int] = None
    fake_size: int = 256
    bad_images: str = "skip"  # corrupt / non-image files: skip with a warning, or fail naming the file
    # video: frames per clip, frame_step apart (or at fps frames per second of the file's time), one
    # random clip per video in training and eval_clips spread over it in evaluation; videos shorter than
    # a clip repeat their last frame (pad) or start over (loop)
    num_frames: int = 16
    frame_step: int = 4
    fps: Optional[int] = None
    eval_clips: int = 1
    short_clips: str = "pad"
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def __post_init__(self) -> None:
        check(self.module is not None or self.name in DATA_NAMES, "data.name",
              f"must be one of {', '.join(DATA_NAMES)} (or a source of your own: data.module=<module>); "
              f"got {self.name!r}")
        check(self.module is not None or not DATA_SOURCES[self.name].root or bool(self.root), "data.root",
              f"is required for data={self.name} (a directory, or a .tar/.tar.gz archive)")
        check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        check(self.img_size > 0 and self.local_img_size > 0, "data.img_size", "sizes must be > 0")
        check(0 < self.eval_crop_ratio <= 1, "data.eval_crop_ratio", f"must be in (0, 1], got {self.eval_crop_ratio}")
        check(len(self.mean) == 3 and len(self.std) == 3, "data.mean", "mean and std need 3 values")
        check(self.bad_images in ("skip", "fail"), "data.bad_images",
               f"must be 'skip' or 'fail', got {self.bad_images!r}")
        check(self.num_frames >= 1, "data.num_frames", f"must be >= 1, got {self.num_frames}")
        check(self.frame_step >= 1, "data.frame_step", f"must be >= 1, got {self.frame_step}")
        check(self.fps is None or self.fps >= 1, "data.fps", f"must be >= 1 frames a second (or null: frame_step), got {self.fps}")
        check(self.eval_clips >= 1, "data.eval_clips", f"must be >= 1, got {self.eval_clips}")
        check(self.short_clips in ("pad", "loop"), "data.short_clips",
              f"must be 'pad' or 'loop', got {self.short_clips!r}")

    @property
    def source(self) -> DataSource:
        """This section's :class:`DataSource` (``data.module``'s ``SOURCE``, else the built-in one)."""
        return data_source(self.name, self.module)

    @property
    def video(self) -> bool:
        return self.source.sample == "clip"


@dataclass
class PhotometricConfig:
    """The photometric part of a method's views (``method.views``): flip, colour jitter, grey, blur,
    solarize, and where they run (``photometric``: the loader workers or, batched, the device).
    LeJEPA's multi-crop (:class:`jepa_zoo.data.views.ViewsConfig`) and IWM's source/target pair
    (:class:`jepa_zoo.data.actions.IWMViewsConfig`) extend it with their own defaults."""

    flip_p: float = 0.5
    jitter: List[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.2
    photometric: str = "loader"  # where jitter/grey/blur/solarize run: loader workers, or the device

    def __post_init__(self) -> None:
        check(self.photometric in ("loader", "device"), "method.views.photometric",
              f"must be 'loader' or 'device', got {self.photometric!r}")
        check(len(self.jitter) == 4 and all(0 <= j for j in self.jitter) and self.jitter[3] <= 0.5,
              "method.views.jitter", f"expected [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, "
              f"got {list(self.jitter)}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"method.views.{name}", f"probability must be in [0, 1], got {v}")


@dataclass
class ViewsConfig(PhotometricConfig):
    """LeJEPA multi-crop: ``num_global`` large and ``num_local`` small views (photometric ops inherited)."""

    num_global: int = 2
    global_size: int = 224
    global_scale: List[float] = field(default_factory=lambda: [0.3, 1.0])
    num_local: int = 6
    local_size: int = 96
    local_scale: List[float] = field(default_factory=lambda: [0.05, 0.3])
    # where the crops and flips are made: the loader workers, or (with photometric=device, images of
    # one size) the device, from the decoded image and each view's box drawn by the loader
    crops: str = "loader"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.crops in ("loader", "device"), "method.views.crops", f"must be 'loader' or 'device', got {self.crops!r}")
        check(self.crops == "loader" or self.photometric == "device", "method.views.crops",
              "device needs method.views.photometric=device too (the crops and then the photometric ops run on the device)")
        check(self.num_global >= 1, "method.views.num_global", f"must be >= 1, got {self.num_global}")
        check(self.num_local >= 0, "method.views.num_local", f"must be >= 0, got {self.num_local}")
        check_range(self.global_scale, "method.views.global_scale", 0.0, 1.0)
        check_range(self.local_scale, "method.views.local_scale", 0.0, 1.0)


@dataclass
class IWMViewsConfig(PhotometricConfig):
    """IWM's photometric views: jitter on both, destructive augmentations on the source only."""

    blur_p: float = 0.2
    solarize_p: float = 0.1


def data_source(name: str, module: Optional[str] = None) -> DataSource:
    """The :class:`DataSource` of ``data=<name>``, or the ``SOURCE`` that ``module`` declares (a
    ConfigError naming ``data.module`` / ``data.name`` when there is none)."""
    from jepa_zoo.errors import ConfigError

    if module is None:
        if name not in DATA_SOURCES:
            raise ConfigError(f"data.name: must be one of {', '.join(DATA_NAMES)}; got {name!r}")
        return DATA_SOURCES[name]
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise
        raise ConfigError(f"data.module: no module {module} (an importable module that declares SOURCE = "
                          "DataSource(...))") from None
    source = getattr(mod, "SOURCE", None)
    if not isinstance(source, DataSource):
        raise ConfigError(f"data.module: {module} declares no SOURCE = DataSource(...)")
    check(source.build is not None and source.sample in SAMPLES, "data.module",
          f"{module}'s SOURCE needs a build ('module:function') and a sample of {', '.join(SAMPLES)}")
    return source
