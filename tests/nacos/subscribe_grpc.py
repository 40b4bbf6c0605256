"""Subscribes to a service through the official Python client (nacos-sdk-python, gRPC) and
prints one line per subscribe callback: "ports P1,P2,..." (the healthy instances' ports), flushed
at once, so that a reader can time when a change reached the client. Exits when its standard
input closes.

Usage: subscribe_grpc.py HOST:PORT SERVICE GROUP WORKDIR
Prints "subscribed" first. Used by benches/nacos.rs.
"""
import asyncio
import logging
import sys

from v2.nacos import ClientConfigBuilder, NacosNamingService, SubscribeServiceParam


async def main() -> None:
    server, service, group, workdir = sys.argv[1:]
    config = (
        ClientConfigBuilder()
        .server_address(server)
        .namespace_id("public")
        .log_dir(workdir)
        .cache_dir(workdir)
        .log_level(logging.ERROR)
        .build()
    )
    naming = await NacosNamingService.create_naming_service(config)

    async def changed(instances) -> None:
        ports = sorted(i.port for i in instances if i.healthy and i.enabled)
        print("ports " + ",".join(str(p) for p in ports), flush=True)

    await naming.subscribe(
        SubscribeServiceParam(service_name=service, group_name=group, subscribe_callback=changed)
    )
    print("subscribed", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await naming.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
