"""GDTM-layout recordings: reader, synthetic generator, torch Dataset, rosbag2 conversion."""
