//! Tunnelled TCP on a front-end: each connection to one of a Site's TCP ports becomes a
//! channel over a link; the back-end joins it to an origin on that port. Any protocol rides
//! through (SMTP, a database, …) with the same link choice and origin balancing as HTTP.
//!
//! A listener belongs to a port, not to a Site: each connection goes to the Site that
//! tunnels the port in the configuration in force, so a reload that changes the Site leaves
//! the listener alone, and one that drops the port stops it (connections already carried go
//! on).

use bytes::Bytes;
use causeway_link::{Channel, ChannelHead, ChannelKind, ChannelReset, LinkError, TcpTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::FrontSite;
use crate::sites::LiveRouter;

/// Accepts connections on one tunnelled port until shutdown or `stop`.
pub async fn serve(
    listener: TcpListener,
    router: LiveRouter<FrontSite>,
    port: u16,
    mut shutdown: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::shutdown::requested(&mut shutdown) => return,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let owner = router
                    .load()
                    .sites()
                    .iter()
                    .find(|site| site.tcp_ports.contains(&port))
                    .cloned();
                let Some(site) = owner else {
                    // Only between a reload's swap and the listener's stop: nobody to carry
                    // the connection to.
                    drop(stream);
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(error) = carry(stream, &site, port).await {
                        tracing::debug!(site = %site.name, %peer, port, %error, "tunnel ended with an error");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(port, %error, "tunnel accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a tunnelled connection ended abnormally.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("no link to a back-end is up")]
    NoLink,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("client connection: {0}")]
    Io(#[from] std::io::Error),
}

async fn carry(mut stream: TcpStream, site: &FrontSite, port: u16) -> Result<(), TunnelError> {
    let _ = stream.set_nodelay(true);
    let Some((_, link)) = site.choose_link(0) else {
        let _ = stream.shutdown().await;
        return Err(TunnelError::NoLink);
    };
    let head = ChannelHead {
        class: site.default_class,
        request_type: 0,
        accepts_zstd: false,
        kind: ChannelKind::Tcp(TcpTarget {
            site: site.name.clone(),
            port,
        }),
    };
    let Channel {
        mut sender,
        mut receiver,
    } = link.open(&head).await?;
    let (mut from_client, mut to_client) = stream.split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    sender.reset(ChannelReset::Cancelled);
                    return Err(TunnelError::Io(error));
                }
            };
            if read == 0 {
                sender.finish()?;
                return Ok(());
            }
            sender.send(Bytes::copy_from_slice(&buffer[..read])).await?;
        }
    };
    let downstream = async {
        while let Some(chunk) = receiver.read_chunk().await? {
            to_client.write_all(&chunk).await?;
        }
        to_client.shutdown().await?;
        Ok::<_, TunnelError>(())
    };
    let (up, down) = tokio::join!(upstream, downstream);
    up.and(down)
}
