"""What tests share: real brokers and MQTT consumers, databases, waiting, a running appliance.
Tests import these helpers, never another test module."""
