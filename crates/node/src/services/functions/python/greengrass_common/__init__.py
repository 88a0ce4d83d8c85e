# Shipped by lichen: the runtime modules greengrasssdk (1.6.1) imports, written fresh with the
# public names the SDK uses (lichen's crates/node/src/services/functions/python/).
