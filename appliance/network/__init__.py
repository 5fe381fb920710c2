"""The network oneshot (teletype-network.service, `teletype network --apply`): the Wi-Fi,
hostname and SSH from teletype.toml's [network], at every boot.
"""
