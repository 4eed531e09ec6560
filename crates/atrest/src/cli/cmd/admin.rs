//! `atrest admin set-password`: the web page's admin password, hashed into the
//! configuration.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::cli::args::AdminCommand;

pub fn run(c: AdminCommand) -> anyhow::Result<()> {
    match c {
        AdminCommand::SetPassword {
            config,
            password_stdin,
        } => {
            let password = if password_stdin || !std::io::stdin().is_terminal() {
                let mut line = Zeroizing::new(String::new());
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                let first = Zeroizing::new(
                    rpassword::prompt_password("New admin password: ")
                        .context("reading the password")?,
                );
                let again = Zeroizing::new(
                    rpassword::prompt_password("Again: ").context("reading the password")?,
                );
                if first != again {
                    bail!("the two passwords differ; nothing was changed");
                }
                first
            };
            admin::password::set(&config.config, &password).with_context(|| {
                format!("setting the admin password in {}", config.config.display())
            })?;
            println!(
                "admin password set in {} ([web] admin_password_hash); a running daemon uses it from the next login",
                config.config.display()
            );
            Ok(())
        }
    }
}
