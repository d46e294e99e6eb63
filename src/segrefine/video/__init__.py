"""Video: refining a clip's frames so that their masks do not flicker.

* :mod:`.frames` -- a video file or folder of frames, streamed one frame at a time;
* :mod:`.flow` -- optical flow between frames (OpenCV DIS), where it is reliable, warping;
* :mod:`.consistency` -- the temporal consistency score of Liu et al. (ECCV 2020);
* :mod:`.temporal` -- :func:`refine_video`: frame-by-frame refinement with a temporal prior;
* :mod:`.outputs` -- what ``segrefine refine --video`` writes.
"""

from .consistency import TemporalConsistency, pair_consistency
from .flow import Motion, flow_to_previous, warp, warp_channels
from .frames import Frame, Frames, open_frames
from .temporal import VideoFrame, refine_video

__all__ = [
    "Frame",
    "Frames",
    "Motion",
    "TemporalConsistency",
    "VideoFrame",
    "flow_to_previous",
    "open_frames",
    "pair_consistency",
    "refine_video",
    "warp",
    "warp_channels",
]
