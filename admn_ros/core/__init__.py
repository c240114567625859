"""Pure core of ADMN: models, controller, policies, corruptions, cost. torch/numpy only, no ROS."""
