"""BMC readers: IPMI over LAN (pyghmi, ipmitool fallback), in-band IPMI, and Redfish."""
