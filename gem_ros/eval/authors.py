"""Each method's published inference settings, read from its authors' code and configs, for
`gem-ros eval --protocol authors`.

The successors (SCLIP, NACLIP, ClearCLIP, SC-CLIP) share SCLIP's mmseg segmentor: the image
resized to a short side (their `Resize scale=(2048, S), keep_ratio=True`), sliding windows,
optional PAMR, then `postprocess_result`: softmax of `logit_scale` x the cosines over every
query, background words among them; classes whose argmax area is at most `area_thd` of the
foreground area dropped; pixels whose best probability is under `prob_thd` set to background.
Their VOC21 configs (a background class) set those per method; their Context59 configs (no
background) only the resize. GEM's paper runs one forward at 448 px and thresholds the
softmax over the classes (gem_ros.gem.postprocess). Each value's source: `SOURCES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# SCLIP's configs/cls_voc21.txt line 0 (wangf3014/SCLIP @ 57fa9aa), which NACLIP copies;
# SC-CLIP is built on SCLIP's code and takes the same name files.
SCLIP_BACKGROUND = (
    "sky, wall, tree, wood, grass, road, sea, river, mountain, sands, desk, bed, building, "
    "cloud, lamp, door, window, wardrobe, ceiling, shelf, curtain, stair, floor, hill, rail, "
    "fence"
).split(", ")
CLEARCLIP_BACKGROUND = ("background",)  # mc-lan/ClearCLIP @ fd05ce4, configs/cls_voc21.txt

SOURCES = {
    "gem": "GEM paper (Bousselham et al., CVPR 2024): one forward at 448 px; background "
    "where the softmax over the classes (CLIP's logit scale) is under 0.8",
    "sclip": "wangf3014/SCLIP: clip_segmentor.py @ d84d4ab (defaults: logit_scale 40, "
    "prob_thd 0, slide 224/112, pamr_steps 0), configs/cfg_voc21.py @ 57fa9aa (logit_scale 65, "
    "prob_thd 0.1, area_thd 0.1, short side 336), cfg_context59.py (short side 336)",
    "naclip": "sinahmr/NACLIP: naclip.py @ 8865082 (logit_scale 40, slide 224/112, "
    "pamr_steps 10 with dilations 8, 16; the README's main results run `pamr on`), "
    "configs/cfg_voc21.py @ 8865082 (prob_thd 0.1, short side 336), cfg_context59.py @ "
    "cbb720d (short side 336)",
    "clearclip": "mc-lan/ClearCLIP: clearclip_segmentor.py @ afe06b8 (logit_scale 50, "
    "slide 448/224, no PAMR), configs/cfg_voc21.py @ fd05ce4 (prob_thd 0.5, short side 448, "
    "background word 'background'), cfg_context59.py (short side 448)",
    "scclip": "SuleBai/SC-CLIP: scclip_segmentor.py @ 74471da (defaults: logit_scale 40, "
    "prob_thd 0, slide 224/112, pamr_steps 0), configs/cfg_voc21.py @ 0417ba9 (logit_scale 50, "
    "prob_thd 0.15, area_thd 0.1, short side 336), cfg_context59.py @ 74471da (short side 336)",
}


@dataclass(frozen=True)
class AuthorsSettings:
    """One method's published inference on a data set with or without a background class."""

    method: str
    input_size: int  # the short side the image is resized to
    slide: int = 0  # window side, 0 = one forward
    slide_stride: int = 112
    pamr_steps: int = 0
    pamr_dilations: str = "8, 16"
    logit_scale: Optional[float] = None  # None: the model's (CLIP's learned scale)
    # Background as queries (their rule) or, when None, GEM's threshold on the classes' softmax.
    background_queries: Optional[tuple[str, ...]] = None
    prob_threshold: float = 0.0
    area_threshold: Optional[float] = None
    source: str = field(default="", compare=False)

    def frame_overrides(self) -> dict:
        """The FrameSettings fields these settings fix."""
        return dict(
            input_size=self.input_size,
            slide=self.slide,
            slide_stride=self.slide_stride,
            refine="pamr" if self.pamr_steps else "none",
            # Unused where refine is none; the setting's range starts at 1.
            pamr_steps=self.pamr_steps or 10,
            pamr_dilations=self.pamr_dilations,
        )

    def describe(self) -> str:
        """One line for the results table."""
        parts = [f"input {self.input_size}"]
        parts.append(f"slide {self.slide}/{self.slide_stride}" if self.slide else "one forward")
        if self.pamr_steps:
            parts.append(f"pamr {self.pamr_steps}")
        parts.append("scale CLIP's" if self.logit_scale is None else f"scale {self.logit_scale:g}")
        if self.background_queries is not None:
            words = self.background_queries
            named = f"{len(words)} bg words" if len(words) > 1 else f"bg word {words[0]!r}"
            parts.append(f"{named}, prob {self.prob_threshold:g}")
        elif self.prob_threshold:
            parts.append(f"bg softmax < {self.prob_threshold:g}")
        if self.area_threshold is not None:
            parts.append(f"area {self.area_threshold:g}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return dict(
            input_size=self.input_size,
            slide=self.slide,
            slide_stride=self.slide_stride,
            pamr_steps=self.pamr_steps,
            pamr_dilations=self.pamr_dilations,
            logit_scale=self.logit_scale,
            background_queries=(
                None if self.background_queries is None else list(self.background_queries)
            ),
            prob_threshold=self.prob_threshold,
            area_threshold=self.area_threshold,
            source=self.source,
        )


class NoAuthorsSettings(ValueError):
    """The method has no published inference settings to run."""


def settings_for(method: str, background: bool) -> AuthorsSettings:
    """`method`'s published settings on a data set with (VOC21-like) or without
    (Context59-like) a background class."""
    src = SOURCES.get(method)
    if src is None:
        raise NoAuthorsSettings(
            f"method {method!r} has no authors' settings (plain CLIP is the baseline, not a "
            "published method): leave it out or run it with --protocol segmentation"
        )
    if method == "gem":
        return AuthorsSettings("gem", 448, prob_threshold=0.8 if background else 0.0, source=src)
    if method == "clearclip":
        return AuthorsSettings(
            "clearclip",
            448,
            slide=448,
            slide_stride=224,
            logit_scale=50.0,
            background_queries=CLEARCLIP_BACKGROUND if background else None,
            prob_threshold=0.5 if background else 0.0,
            source=src,
        )
    window = dict(input_size=336, slide=224, slide_stride=112, source=src)
    if method == "naclip":
        return AuthorsSettings(
            "naclip",
            pamr_steps=10,
            logit_scale=40.0,
            background_queries=tuple(SCLIP_BACKGROUND) if background else None,
            prob_threshold=0.1 if background else 0.0,
            **window,
        )
    if not background:
        return AuthorsSettings(method, logit_scale=40.0, **window)
    scale, prob = (65.0, 0.1) if method == "sclip" else (50.0, 0.15)
    return AuthorsSettings(
        method,
        logit_scale=scale,
        background_queries=tuple(SCLIP_BACKGROUND),
        prob_threshold=prob,
        area_threshold=0.1,
        **window,
    )
