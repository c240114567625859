"""admn_ros: adaptive-depth multimodal fusion (ADMN) for ROS 2."""

from pkgutil import extend_path

# The colcon build installs the generated `admn_ros.msg` into install/; when this source tree
# is first on sys.path, extend the package path so both halves import as one package.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
