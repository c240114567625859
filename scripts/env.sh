# Source me: `. scripts/env.sh` puts the venv, the built messages and the ROS libraries on the paths.
# Discovery stays on this machine unless the caller chose otherwise: export
# ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET (and a ROS_DOMAIN_ID) before sourcing for live deployment.
_admn_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_admn_venv="$_admn_root/.venv"
_admn_install="$_admn_root/install"
_admn_site="lib/python3.11/site-packages"

export VIRTUAL_ENV="$_admn_venv"
export PATH="$_admn_venv/bin:$PATH"
# Source tree first: `admn_ros` extends its __path__ so the generated `admn_ros.msg` in
# install/ is found beside the project's modules (see admn_ros/__init__.py). tf2_msgs: the
# stand-in built by `make setup` (deps/tf2_msgs).
export PYTHONPATH="$_admn_root:$_admn_install/admn_ros/$_admn_site:$_admn_install/tf2_msgs/$_admn_site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$_admn_install/admn_ros/lib:$_admn_install/tf2_msgs/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$_admn_install/admn_ros:$_admn_install/tf2_msgs:$_admn_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_admn_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
unset _admn_root _admn_venv _admn_site _admn_install
