"""Training stages and evaluation built on admn_ros.core and admn_ros.data."""
