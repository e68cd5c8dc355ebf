//! A remote host reached with an SSH command: what `[[hosts]]` addresses
//! become. Used for its bus (`systemd-stdio-bridge`), its files, its
//! journal, its probes and its container engine; it knows nothing of D-Bus.

/// `[USER@]HOST[:PORT]` reached with an SSH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `USER@HOST` or `HOST`, passed to ssh as one argument.
    pub destination: String,
    pub host: String,
    pub port: Option<u16>,
    /// The SSH program and the options the operator gave it.
    pub ssh: Vec<String>,
}

/// Why a remote host cannot be reached as given.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Address(#[from] crate::model::AddressError),
    #[error("the SSH command is empty")]
    EmptySshCommand,
}

impl Remote {
    /// Parses `[USER@]HOST[:PORT]` (see [`crate::model::Address`]).
    pub fn parse(spec: &str, ssh_command: &str) -> Result<Remote, RemoteError> {
        let a = crate::model::Address::parse(spec)?;
        let ssh: Vec<String> = ssh_command.split_whitespace().map(str::to_string).collect();
        if ssh.is_empty() {
            return Err(RemoteError::EmptySshCommand);
        }
        Ok(Remote {
            destination: a.destination,
            host: a.host,
            port: a.port,
            ssh,
        })
    }

    /// The program and its arguments: `ssh -xT [-p PORT] -- DEST systemd-stdio-bridge`.
    pub fn command(&self) -> (String, Vec<String>) {
        self.run("systemd-stdio-bridge")
    }

    /// `ssh … -- DEST REMOTE_COMMAND`. BatchMode makes a password or
    /// host-key prompt fail at once instead of waiting for a terminal that
    /// is not there. The remote shell parses `remote_command`.
    pub fn run(&self, remote_command: &str) -> (String, Vec<String>) {
        self.with_options(&[], Some(remote_command))
    }

    /// `ssh … OPTIONS -- DEST [REMOTE_COMMAND]`: `options` go after the
    /// operator's own, before the destination (`-W`, `-o ControlPath=…`).
    pub fn with_options(
        &self,
        options: &[String],
        remote_command: Option<&str>,
    ) -> (String, Vec<String>) {
        let mut args: Vec<String> = self.ssh[1..].to_vec();
        args.extend(["-xT".into(), "-o".into(), "BatchMode=yes".into()]);
        if let Some(p) = self.port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend(options.iter().cloned());
        args.extend(["--".into(), self.destination.clone()]);
        args.extend(remote_command.map(str::to_string));
        (self.ssh[0].clone(), args)
    }
}
