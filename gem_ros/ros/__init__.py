"""gem_ros's ROS side: the node (`node`) and what only it needs: its parameter table
(`parameters`), sensor_msgs conversion (`image_conversion`), depth input and its
synchroniser (`depth_input`, `sync`), result messages (`messages`) and rviz markers
(`markers`), and the command-line client of a running node (`client`: `gem-ros queries`,
`gem-ros where`). Everything else in gem_ros runs without ROS."""
