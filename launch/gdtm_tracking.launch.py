"""ADMN tracking graph: `ros2 launch admn_ros gdtm_tracking.launch.py bag:=/path/to/run.mcap`.

The nodes, their parameter files and remappings come from `admn_ros.nodes.graph.describe_graph`
(the same description `admn run` executes), so this file only maps launch arguments onto it.
Live on the car: leave `bag` empty and pass `topics:=<drivers>` (config/topics/<drivers>.yaml,
e.g. `topics:=realsense_ti`).
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch_ros.actions import Node

from admn_ros.nodes.graph import GraphOptions, describe_graph
from admn_ros.paths import share_dir
from launch import LaunchDescription

ARGUMENTS = {
    "bag": ("", "rosbag2 to replay; empty = live sensors"),
    "weights": ("", "ADMN checkpoint; empty = models/admn_demo.pt"),
    "budget": ("simulated", "auto | ina3221 | jtop | nvml | rapl | simulated, or a layer count"),
    "budget_profile": ("", "simulated power profile (config/power/*.yaml)"),
    "backend": ("auto", "eager | compile | tensorrt | auto"),
    "rate": ("1.0", "replay speed factor"),
    "rviz": ("true", "start rviz2 with config/gdtm_tracking.rviz"),
    "inject": ("", "corruption schedule (config/inject/*.yaml); empty = none"),
    "topics": ("", "live mode: driver topics -> graph inputs: a name in config/topics/ "
               "(realsense_ti) or a YAML path"),
    "player": ("admn", "admn = the package's bag player | ros2 = `ros2 bag play --clock`"),
    "namespace": ("", "namespace of the whole graph (e.g. car2: /car2/admn/pose); empty = root"),
    # launch's own setting (default 5 s): after Ctrl-C each node publishes its final totals
    # and shuts down; measured ~5 s on a loaded 2-core machine, so launch waits longer before
    # escalating to SIGTERM
    "sigterm_timeout": ("15", "seconds between Ctrl-C (SIGINT) and SIGTERM for every node"),
}


def options_from(context) -> GraphOptions:
    arg = context.launch_configurations
    use_admn_player = arg["player"] == "admn"
    return GraphOptions(bag=arg["bag"] if use_admn_player else "", weights=arg["weights"],
                        budget=arg["budget"], budget_profile=arg["budget_profile"],
                        backend=arg["backend"], rate=float(arg["rate"]), inject=arg["inject"],
                        topics=arg["topics"], use_sim_time=bool(arg["bag"]),
                        namespace=arg["namespace"])


def build(context):
    arg = context.launch_configurations
    actions = [Node(package="admn_ros", executable=spec.executable, name=spec.name,
                    namespace=spec.namespace or None, parameters=spec.parameters,
                    remappings=spec.remappings, output="screen")
               for spec in describe_graph(options_from(context))]
    if arg["bag"] and arg["player"] == "ros2":
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", arg["bag"], "--clock",
                                           "--rate", arg["rate"]], output="screen"))
    if arg["rviz"].lower() in ("true", "1"):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", str(share_dir() / "config" / "gdtm_tracking.rviz")],
                            parameters=[{"use_sim_time": bool(arg["bag"])}]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()],
        OpaqueFunction(function=build),
    ])
