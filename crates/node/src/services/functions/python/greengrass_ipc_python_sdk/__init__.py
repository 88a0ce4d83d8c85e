# Shipped by lichen: the client side of the Greengrass v1 Lambda IPC (HTTP on GG_DAEMON_PORT).
