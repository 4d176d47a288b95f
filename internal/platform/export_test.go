package platform

// HealthTransport is the transport of HealthCheck's client.
var HealthTransport = healthClient.Transport
