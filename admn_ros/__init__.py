"""admn_ros: adaptive-depth multimodal fusion (ADMN) for ROS 2."""

__version__ = "0.1.0"
