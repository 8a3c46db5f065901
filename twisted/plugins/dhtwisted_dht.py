"""
The ``dht`` twistd plugin: ``twistd -n dht --config etc/node.ini``.

Only a ServiceMaker lives here, so that ``twistd --help`` does not import
the node's code.
"""

from twisted.application.service import ServiceMaker

dhtwisted_dht = ServiceMaker(
    "dhtwisted",
    "dhtwisted.tap",
    "A node of dhtwisted, a masterless distributed in-memory key-value database",
    "dht",
)
