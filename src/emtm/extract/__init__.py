"""Raw video in, clip features out: decode (PyAV), sample frames, run a frame backbone, pool into clips.

    emtm extract --videos videos/ --out features/ --backbone efficientnet-lite0 --fps 1

See docs/VIDEO.md. Needs the `video` extra (`pip install 'emtm[video]'`).
"""

from emtm.extract.backbones import Backbone, ModuleBackbone, backbone_names, build_backbone, register_backbone
from emtm.extract.extractor import FEATURES_JSON, VideoResult, extract_videos, pool_clips
from emtm.extract.video import VideoInfo, sample_frames

__all__ = [
    "FEATURES_JSON",
    "Backbone",
    "ModuleBackbone",
    "VideoInfo",
    "VideoResult",
    "backbone_names",
    "build_backbone",
    "extract_videos",
    "pool_clips",
    "register_backbone",
    "sample_frames",
]
