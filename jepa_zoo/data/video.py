"""Video clips from a folder of files, decoded with PyAV.

Layout: ``root/<class>/*.{mp4,webm,avi,mkv,mov}`` (labelled, classes sorted) or ``root/*.mp4``
(unlabelled: label ``-1``); tar archives of either are extracted as image folders are
(:func:`jepa_zoo.data.datasets.resolve_root`).

Why PyAV: its wheels carry their own FFmpeg, so ``pip install av`` decodes H.264/VP9/AV1 on a fresh
machine; torchcodec needs a system FFmpeg of a matching version, and torchvision's video API is
deprecated (and gone from recent releases).

Clip sampling (:func:`clip_indices`): ``num_frames`` frames ``frame_step`` apart (or, with ``fps``,
the official step ``⌈file's frame rate⌉ // fps``), spanning ``(num_frames − 1)·step + 1``
frames.  Training takes one clip at a uniformly random start (torch's generator, which the training
loader seeds per batch, so resume repeats it); evaluation takes ``clips`` clips at the centres of
``clips`` equal segments of the video (one clip: the middle; the official evaluation takes one clip
per segment too, at a random offset).  A video shorter than the span gives its frames ``step`` apart, then repeats its
last frame (``short="pad"``, the official behaviour) or starts over (``short="loop"``), counted and
warned about once per file.  A file that cannot be decoded (corrupt, truncated to nothing, not a
video) or that ends well before the frames its container lists (truncated) raises
:class:`VideoError`, which :class:`jepa_zoo.data.datasets.SkipUnreadable` skips and
counts (or turns into a stop with ``data.bad_images=fail``): never a crash mid-epoch.

Late clips are reached by seeking to the keyframe before them (:func:`decode`), and a container
without a frame count is sized from its duration (:func:`probe`), so long videos are not decoded
from their start.

A sample is ``(frames, label)`` with ``frames`` uint8 ``[T, C, H, W]`` (``[clips, T, C, H, W]`` with
several clips) before the transform (:mod:`jepa_zoo.data.video_views`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Set, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from jepa_zoo.data.datasets import DataError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")


class VideoError(ValueError):
    """A video file that cannot be decoded."""


def import_av():
    try:
        import av
    except ImportError as e:
        raise DataError("video data needs PyAV: pip install 'jepa_zoo[video]' (or pip install av)") from e
    return av


def clip_indices(n: int, num_frames: int, step: int, clips: int = 1, train: bool = True,
                 short: str = "pad") -> Tuple[Tensor, bool]:
    """Frame indices ``[clips, num_frames]`` into a video of ``n`` frames (module docstring), and
    whether the video was too short for one span."""
    if n < 1:
        raise VideoError("the video has no frames")
    span = (num_frames - 1) * step + 1
    offsets = torch.arange(num_frames) * step
    if n >= span:
        if train:
            starts = torch.randint(0, n - span + 1, (clips,))
        else:  # the centres of `clips` equal segments of the possible starts (one clip: the middle)
            starts = ((torch.arange(clips) + 0.5) * (n - span) / clips).round().long()
        return starts[:, None] + offsets, False
    have = torch.arange(0, n, step)
    if short == "loop":
        idx = have[torch.arange(num_frames) % len(have)]
    else:
        idx = torch.cat([have, have[-1:].expand(num_frames - len(have))]) if len(have) < num_frames else have
    return idx[:num_frames].expand(clips, -1), True


SEEK_AFTER = 48  # frames: a clip that starts later seeks to the keyframe before it instead of decoding up to it


def decode(path: Path, wanted: Set[int]) -> Tuple[dict, int]:
    """The frames at ``wanted`` indices (uint8 ``[H, W, 3]`` arrays) and ``1 +`` the index of the last
    frame decoded (the file's frame count when it ends before the last one wanted).  A clip that
    starts after frame :data:`SEEK_AFTER` seeks to the keyframe before its first frame and counts
    frames from their timestamps; where timestamps cannot say (none, or the seek lands past the
    frame), it decodes in order from the start, as shorter clips do."""
    av = import_av()
    try:
        if min(wanted) > SEEK_AFTER:
            with av.open(str(path)) as container:
                got = _seek_decode(container, wanted)
            if got is not None:
                return got
        with av.open(str(path)) as container:
            return _decode_in_order(container, wanted)
    except av.FFmpegError as e:
        raise VideoError(f"{type(e).__name__}: {e}") from e


def _decode_in_order(container, wanted: Set[int]) -> Tuple[dict, int]:
    if not container.streams.video:
        raise VideoError("no video stream")
    frames, last, count = {}, max(wanted), 0
    for i, frame in enumerate(container.decode(video=0)):
        count = i + 1
        if i in wanted:
            frames[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return frames, count


def _seek_decode(container, wanted: Set[int]) -> Optional[Tuple[dict, int]]:
    """:func:`decode` by seeking; None where the timestamps cannot place the frames."""
    if not container.streams.video:
        raise VideoError("no video stream")
    stream = container.streams.video[0]
    first_frame = next(container.decode(stream), None)
    if first_frame is None or first_frame.pts is None or not stream.time_base or not stream.average_rate:
        return None
    p0, per = first_frame.pts, 1 / (stream.average_rate * stream.time_base)  # timestamp units per frame
    first, last = min(wanted), max(wanted)
    container.seek(int(p0 + first * per), stream=stream, backward=True, any_frame=False)
    frames, i = {}, -1
    for frame in container.decode(stream):
        if frame.pts is None:
            return None
        i = round((frame.pts - p0) / per)
        if not frames and i > first:
            return None  # landed past the first frame wanted
        if i in wanted:
            frames[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    if set(frames) != {j for j in wanted if j <= i}:
        return None  # uneven timestamps (variable frame rate): decode in order instead
    return frames, i + 1


def probe(path: Path) -> Tuple[int, float]:
    """(frame count, frame rate) from the container: its frame count, else its duration times the rate
    (a little off at worst: :meth:`VideoClips.read` allows for that), else counted by decoding."""
    av = import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            n = stream.frames
            if not n and stream.duration and stream.time_base:  # no count (WebM, MKV): duration x rate
                n = int(stream.duration * stream.time_base * rate)
            elif not n and container.duration:
                n = int(container.duration / 1_000_000 * rate)
            if not n:
                n = sum(1 for _ in container.decode(video=0))
            return int(n), rate
    except av.FFmpegError as e:
        raise VideoError(f"{type(e).__name__}: {e}") from e


class VideoClips(Dataset):
    """Clips of the videos under ``root`` (module docstring)."""

    kind = "video"  # what SkipUnreadable's messages call a sample

    def __init__(self, root: Path, num_frames: int, frame_step: int = 4, fps: Optional[int] = None,
                 clips: int = 1, train: bool = True, short: str = "pad", transform: Optional[Callable] = None):
        import_av()
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"video folder does not exist: {root}")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.classes: List[str] = [d.name for d in subdirs]
        self.samples: List[Tuple[Path, int]] = (
            [(f, c) for c, d in enumerate(subdirs) for f in sorted(d.rglob("*")) if _is_video(f)] if subdirs
            else [(f, -1) for f in sorted(root.iterdir()) if _is_video(f)])
        if not self.samples:
            raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {root}")
        self.num_frames, self.frame_step, self.fps = num_frames, frame_step, fps
        self.clips, self.train, self.short, self.transform = clips, train, short, transform
        self.num_short = 0
        self._warned: Set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def files(self) -> List[Path]:
        return [p for p, _ in self.samples]

    @property
    def targets(self) -> List[int]:
        """Every clip's label, without decoding (as ImageFolder's ``targets``)."""
        return [y for _, y in self.samples]

    def step_for(self, rate: float) -> int:
        """The frame step: ``data.frame_step``, or with ``data.fps`` the official ``⌈rate⌉ // fps``."""
        return max(1, math.ceil(rate) // self.fps) if self.fps else self.frame_step

    def read(self, i: int) -> Tensor:
        """The uint8 clip(s) of video ``i``: ``[T, C, H, W]`` or ``[clips, T, C, H, W]``."""
        path = self.samples[i][0]
        n, rate = probe(path)
        idx, short = clip_indices(n, self.num_frames, self.step_for(rate), self.clips, self.train, self.short)
        frames, decoded = decode(path, set(idx.flatten().tolist()))
        if decoded < int(idx.max()) + 1:  # the file ends before the frames its container lists
            if decoded < 0.9 * n:
                raise VideoError(f"truncated: the container lists {n} frames, {decoded} decode")
            # a container count a little off (some encoders): sample from the frames that are there
            idx, short = clip_indices(decoded, self.num_frames, self.step_for(rate), self.clips, self.train, self.short)
            frames, _ = decode(path, set(idx.flatten().tolist()))
        if short and i not in self._warned:
            self._warned.add(i)
            self.num_short += 1
            warnings.warn(f"{path}: {n} frames, shorter than a {self.num_frames}-frame clip every "
                          f"{self.step_for(rate)} frames; its last frame is {'looped' if self.short == 'loop' else 'repeated'} "
                          f"({self.num_short} short videos so far in this process)", stacklevel=2)
        clip = torch.stack([torch.from_numpy(frames[j]) for j in idx.flatten().tolist()])  # [k·T, H, W, 3]
        clip = clip.view(*idx.shape, *clip.shape[1:]).permute(0, 1, 4, 2, 3)  # [k, T, 3, H, W]
        return clip[0] if self.clips == 1 else clip

    def __getitem__(self, i: int):
        clip = self.read(i)
        return (self.transform(clip) if self.transform else clip), self.samples[i][1]


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")

