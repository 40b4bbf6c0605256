"""Registers instances in a Nacos server through the official Python client (nacos-sdk-python,
gRPC), keeps them registered while it runs, and exits when its standard input closes.

Usage: register_grpc.py HOST:PORT SERVICE GROUP WORKDIR PORT[*WEIGHT] ...
Prints "registered" once every instance is registered. Used by tests/nacos_rnacos.rs.
"""
import asyncio
import logging
import sys

from v2.nacos import ClientConfigBuilder, NacosNamingService, RegisterInstanceParam


async def main() -> None:
    server, service, group, workdir, *items = sys.argv[1:]
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
    for item in items:
        port, _, weight = item.partition("*")
        ok = await naming.register_instance(
            RegisterInstanceParam(
                service_name=service,
                group_name=group,
                ip="127.0.0.1",
                port=int(port),
                weight=float(weight or "1"),
                cluster_name="DEFAULT",
                ephemeral=True,
            )
        )
        if not ok:
            raise SystemExit(f"registering {item} failed")
    print("registered", flush=True)
    # Stay connected (the gRPC connection keeps ephemeral instances alive) until stdin closes.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await naming.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
