"""pip-installable library and the `admn` console script.

`colcon build` uses CMakeLists.txt (ament_cmake, for the messages); this file serves
`pip install -e .` in the development venv that `make setup` creates.
"""

from setuptools import find_packages, setup

setup(
    name="admn_ros",
    version="0.1.0",
    description="Adaptive-depth multimodal fusion (ADMN) for ROS 2",
    packages=find_packages(include=["admn_ros", "admn_ros.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["admn = admn_ros.cli:main"]},
)
