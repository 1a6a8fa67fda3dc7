//! Names the operator's pods and the binaries must spell the same: files
//! and directories in the recorder pod, environment variables, ports.

/// The recorder config file's name: its key in the ConfigMap and its file
/// name in the pod.
pub const CONFIG_FILE: &str = "recorder.yaml";
/// Where the ConfigMap with the config file is mounted in the recorder pod.
pub const CONFIG_DIR: &str = "/etc/earshot";
/// The spool directory in the recorder pod (its persistent volume).
pub const SPOOL_DIR: &str = "/var/spool/earshot";
/// Where the announcement prompt's ConfigMap key is mounted in the recorder
/// pod (a volume of its own, so the kubelet updates it in place).
pub const PROMPT_DIR: &str = "/etc/earshot-prompt";

/// The address the recorder advertises when its config names none (the
/// operator sets it from the pod or node IP).
pub const ADVERTISED_ADDRESS_ENV: &str = "EARSHOT_ADVERTISED_ADDRESS";
/// The node a recorder runs on (host network picks its `nodeAddresses`).
pub const NODE_NAME_ENV: &str = "EARSHOT_NODE_NAME";
/// The S3 access key id, read by `object_store` from the environment.
pub const ACCESS_KEY_ID_ENV: &str = "AWS_ACCESS_KEY_ID";
/// The S3 secret access key, likewise.
pub const SECRET_ACCESS_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";

/// The recorder's `/metrics`, `/healthz` and `/readyz` port in a pod.
pub const RECORDER_HTTP_PORT: u16 = 9090;
/// The default SIP port.
pub const SIP_PORT: u16 = 5060;

/// The console's page port.
pub const CONSOLE_PORT: u16 = 8080;
/// The console's `/healthz` and `/metrics` port.
pub const CONSOLE_HEALTH_PORT: u16 = 8081;

/// Environment of `earshot-console` (the operator fills these in its pod).
pub mod console_env {
    /// A local directory of recordings (instead of an S3 endpoint).
    pub const DIR: &str = "EARSHOT_CONSOLE_DIR";
    /// The S3 endpoint URL.
    pub const ENDPOINT: &str = "EARSHOT_CONSOLE_ENDPOINT";
    /// The bucket.
    pub const BUCKET: &str = "EARSHOT_CONSOLE_BUCKET";
    /// The signing region.
    pub const REGION: &str = "EARSHOT_CONSOLE_REGION";
    /// `true` for virtual-hosted bucket addressing.
    pub const VIRTUAL_HOSTED: &str = "EARSHOT_CONSOLE_VIRTUAL_HOSTED";
    /// The policy's key prefix.
    pub const PREFIX: &str = "EARSHOT_CONSOLE_PREFIX";
    /// Where the page listens.
    pub const LISTEN: &str = "EARSHOT_CONSOLE_LISTEN";
    /// Where `/healthz` and `/metrics` listen.
    pub const HEALTH_LISTEN: &str = "EARSHOT_CONSOLE_HEALTH_LISTEN";
    /// The header the authenticating proxy names the user in.
    pub const IDENTITY_HEADER: &str = "EARSHOT_CONSOLE_IDENTITY_HEADER";
    /// CIDRs the proxy connects from, comma-separated.
    pub const TRUSTED_PROXIES: &str = "EARSHOT_CONSOLE_TRUSTED_PROXIES";
    /// Host names the page answers to, comma-separated.
    pub const ALLOWED_HOSTS: &str = "EARSHOT_CONSOLE_ALLOWED_HOSTS";
}
