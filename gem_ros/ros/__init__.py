"""gem_ros's ROS side: the node (`node`) and what only it needs: its parameter table
(`parameters`), sensor_msgs conversion (`image_conversion`), depth input and its
synchroniser (`depth_input`, `sync`), result messages (`messages`) and rviz markers
(`markers`). Everything else in gem_ros runs without ROS."""
