"""Thin ROS 2 nodes over the core, data and engine packages."""
