"""gem_ros: GEM open-vocabulary localisation for ROS 2.

The generated message modules (gem_ros.msg, gem_ros.srv) exist only in the installed copy of
this package. Extending __path__ lets a source checkout that comes first on sys.path still find
them there, next to the modules of the source tree.
"""

__path__ = __import__('pkgutil').extend_path(__path__, __name__)
