//! Real namespaces, real TUN devices: the emulated links delay, drop, rate-limit and route as
//! configured. Needs root (CI runs as root); elsewhere each test says why it skips.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use causeway_linkem::{Impairment, NetLab, netns};

const MS: Duration = Duration::from_millis(1);

/// Measurements share two cores: one lab at a time keeps them honest.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test lock, or `None` when this machine cannot build labs (not root).
fn lab_slot() -> Option<MutexGuard<'static, ()>> {
    let root = nix::unistd::geteuid().is_root();
    let tun = std::path::Path::new("/dev/net/tun").exists();
    if !(root && tun) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the linkem tests as root with /dev/net/tun"
        );
        eprintln!("skipped: needs root and /dev/net/tun");
        return None;
    }
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

fn two_namespaces(forward: Impairment, backward: Impairment) -> NetLab {
    NetLab::builder()
        .namespace("client")
        .namespace("server")
        .direction("client", "server", forward)
        .direction("server", "client", backward)
        .seed(1)
        .build()
        .expect("build the lab")
}

fn udp_in(lab: &NetLab, ns: &str, port: u16) -> UdpSocket {
    let addr = SocketAddr::from((lab.address(ns), port));
    lab.in_namespace(ns, || UdpSocket::bind(addr))
        .expect("enter namespace")
        .expect("bind UDP")
}

fn tcp_listener_in(lab: &NetLab, ns: &str) -> TcpListener {
    let addr = SocketAddr::from((lab.address(ns), 0));
    lab.in_namespace(ns, || TcpListener::bind(addr))
        .expect("enter namespace")
        .expect("listen")
}

fn tcp_connect_from(lab: &NetLab, ns: &str, to: SocketAddr) -> (TcpStream, Duration) {
    lab.in_namespace(ns, || {
        let start = Instant::now();
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        Ok::<_, std::io::Error>((stream, start.elapsed()))
    })
    .expect("enter namespace")
    .expect("connect")
}

/// Echoes datagrams until `stop` arrives as a payload or nothing comes for a while.
fn spawn_udp_echo(socket: UdpSocket) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if &buf[..n] == b"stop" {
                break;
            }
            let _ = socket.send_to(&buf[..n], from);
        }
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// How much later than the emulated delay a busy host may deliver the typical packet: the
/// forwarder's threads wait for a core when both are loaded.
const BUSY_SLACK: Duration = Duration::from_millis(25);

/// Asserts that RTT `samples` show an emulated RTT in `floor..ceiling`: no sample beats the
/// floor (the delay is applied to every packet, early never), the quickest is under the
/// ceiling (the emulator adds no more than it was told), and the median is within
/// [`BUSY_SLACK`] of it (no systematic extra delay, while a loaded host may hold a few).
fn assert_rtt(what: &str, samples: &[Duration], floor: Duration, ceiling: Duration) {
    let quickest = samples.iter().min().copied().expect("some samples");
    let early: Vec<&Duration> = samples.iter().filter(|&&rtt| rtt < floor).collect();
    assert!(early.is_empty(), "{what}: RTTs under {floor:?}: {early:?}");
    assert!(
        quickest < ceiling,
        "{what}: the quickest RTT {quickest:?} is not under {ceiling:?}: {samples:?}"
    );
    let typical = median(samples.to_vec());
    assert!(
        typical < ceiling + BUSY_SLACK,
        "{what}: median RTT {typical:?} over {:?}: {samples:?}",
        ceiling + BUSY_SLACK
    );
}

/// RTTs of `count` sequential UDP echoes from `client` to an echo server.
fn udp_rtt(client: &UdpSocket, server: SocketAddr, count: usize) -> Vec<Duration> {
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let payload = (i as u32).to_be_bytes();
        let start = Instant::now();
        client.send_to(&payload, server).expect("send");
        loop {
            let (n, _) = client.recv_from(&mut buf).expect("echo lost");
            if buf[..n] == payload {
                break;
            }
        }
        rtts.push(start.elapsed());
    }
    rtts
}

#[test]
fn twenty_ms_each_way_gives_forty_ms_rtt() {
    let Some(_slot) = lab_slot() else { return };
    let delay = Impairment::delay(20 * MS);
    let lab = two_namespaces(delay, delay);

    let server = udp_in(&lab, "server", 9000);
    let server_addr = server.local_addr().expect("addr");
    let echo = spawn_udp_echo(server);
    let client = udp_in(&lab, "client", 0);
    let rtt = udp_rtt(&client, server_addr, 40);
    client.send_to(b"stop", server_addr).expect("stop");
    echo.join().expect("echo thread");

    let listener = tcp_listener_in(&lab, "server");
    let target = listener.local_addr().expect("addr");
    // The kernel completes handshakes into the backlog; nothing needs to accept them.
    let connects: Vec<Duration> = (0..5)
        .map(|_| tcp_connect_from(&lab, "client", target).1)
        .collect();
    drop(listener);

    eprintln!("UDP echo RTTs {rtt:?}, TCP connects {connects:?}");
    assert_rtt("UDP echo", &rtt, 39 * MS, 45 * MS);
    assert_rtt("TCP connect", &connects, 39 * MS, 45 * MS);
}

#[test]
fn ten_percent_loss_loses_ten_percent_of_datagrams() {
    let Some(_slot) = lab_slot() else { return };
    let lab = two_namespaces(Impairment::NONE.with_loss(0.10), Impairment::NONE);
    let server = udp_in(&lab, "server", 9001);
    let server_addr = server.local_addr().expect("addr");
    let client = udp_in(&lab, "client", 0);
    const SENT: u32 = 3000;

    let receiver = thread::spawn(move || {
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut seen = vec![false; SENT as usize];
        let mut buf = [0u8; 64];
        while let Ok(n) = server.recv(&mut buf) {
            if n == 4 {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if let Some(slot) = seen.get_mut(seq as usize) {
                    *slot = true;
                }
            }
        }
        seen.iter().filter(|s| **s).count()
    });
    for seq in 0..SENT {
        client
            .send_to(&seq.to_be_bytes(), server_addr)
            .expect("send");
        // Pace the sender so no socket buffer drops what the link did not.
        if seq % 20 == 19 {
            thread::sleep(MS);
        }
    }
    let received = receiver.join().expect("receiver");
    let lost = f64::from(SENT) - received as f64;
    let fraction = lost / f64::from(SENT);
    let stats = lab.stats("client", "server").expect("stats");
    eprintln!("lost {fraction:.4} of {SENT}; link stats {stats:?}");
    assert!(
        (0.07..=0.13).contains(&fraction),
        "lost fraction {fraction}"
    );
    // Every datagram the link did not drop arrived.
    assert!(
        stats.lost as f64 >= lost - 2.0 && stats.lost as f64 <= lost,
        "{stats:?}"
    );
}

#[test]
fn twenty_mbit_rate_limits_tcp_goodput() {
    let Some(_slot) = lab_slot() else { return };
    let rate = 20_000_000;
    let lab = two_namespaces(
        Impairment::delay(5 * MS)
            .with_rate(rate)
            .with_queue_limit(100_000),
        Impairment::delay(5 * MS),
    );
    let goodput = tcp_goodput(
        &lab,
        "client",
        "server",
        Duration::from_secs(1),
        Duration::from_secs(5),
    );
    let ratio = goodput / rate as f64;
    let stats = lab.stats("client", "server").expect("stats");
    eprintln!(
        "goodput {:.2} Mbit/s ({ratio:.3} of the rate); {stats:?}",
        goodput / 1e6
    );
    assert!((0.8..=1.05).contains(&ratio), "goodput ratio {ratio}");
}

#[test]
fn client_reaches_back_through_front() {
    let Some(_slot) = lab_slot() else { return };
    let lab = NetLab::builder()
        .namespace("client")
        .namespace("front")
        .namespace("back")
        .link("client", "front", Impairment::delay(2 * MS))
        .link("front", "back", Impairment::delay(3 * MS))
        .build()
        .expect("build the lab");
    let listener = tcp_listener_in(&lab, "back");
    let target = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        let mut msg = [0u8; 5];
        stream.read_exact(&mut msg).expect("read");
        stream.write_all(&msg).expect("write");
        peer
    });
    let (mut stream, connect) = tcp_connect_from(&lab, "client", target);
    stream.write_all(b"hello").expect("write");
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).expect("read");
    let peer = server.join().expect("server");

    assert_eq!(&reply, b"hello");
    // No NAT: the back end sees the client's own address.
    assert_eq!(peer.ip(), lab.address("client"));
    // Two links of 2 + 3 ms each way.
    assert!(
        connect >= 9 * MS && connect < 20 * MS,
        "connect {connect:?}"
    );
    // Each hop carried the handshake and the data both ways: at least two packets each
    // (SYN or SYN-ACK, then the data, which may carry the ACK). A forwarder counts a packet
    // after it has passed it on, so the count may trail the reply by a moment.
    for (from, to) in [
        ("client", "front"),
        ("front", "back"),
        ("back", "front"),
        ("front", "client"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut forwarded = 0;
        while Instant::now() < deadline {
            forwarded = lab.stats(from, to).expect("stats").forwarded_packets;
            if forwarded >= 2 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(forwarded >= 2, "{from}>{to}: {forwarded} packets");
    }
    // The middle namespace is reachable too, and 127.0.0.1 stays local everywhere.
    let front = tcp_listener_in(&lab, "front");
    tcp_connect_from(&lab, "client", front.local_addr().expect("addr"));
    let local = lab
        .in_namespace("client", || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .expect("enter")
        .expect("bind 127.0.0.1");
    // The connection to `front` closes as its stream drops; its FIN and ACKs must be
    // through the forwarder before the count is taken.
    let before = settled_forwarded(&lab, "client", "front");
    tcp_connect_from(&lab, "client", local.local_addr().expect("addr"));
    assert_eq!(settled_forwarded(&lab, "client", "front"), before);
}

/// Packets forwarded `from` → `to` once the count has stopped moving (unchanged for 200 ms).
fn settled_forwarded(lab: &NetLab, from: &str, to: &str) -> u64 {
    let count = || lab.stats(from, to).expect("stats").forwarded_packets;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = count();
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn impairment_changes_while_running() {
    let Some(_slot) = lab_slot() else { return };
    let lab = two_namespaces(Impairment::NONE, Impairment::NONE);
    let server = udp_in(&lab, "server", 9002);
    let server_addr = server.local_addr().expect("addr");
    let echo = spawn_udp_echo(server);
    let client = udp_in(&lab, "client", 0);

    let fast = udp_rtt(&client, server_addr, 10);
    lab.set_impairment("client", "server", Impairment::delay(30 * MS))
        .expect("degrade");
    let slow = udp_rtt(&client, server_addr, 10);
    lab.set_impairment("client", "server", Impairment::NONE)
        .expect("restore");
    let restored = udp_rtt(&client, server_addr, 10);
    client.send_to(b"stop", server_addr).expect("stop");
    echo.join().expect("echo");

    eprintln!("RTT {fast:?} -> {slow:?} -> {restored:?}");
    assert_rtt("before", &fast, Duration::ZERO, 5 * MS);
    assert_rtt("degraded", &slow, 29 * MS, 35 * MS);
    assert_rtt("restored", &restored, Duration::ZERO, 5 * MS);
    assert_eq!(
        lab.impairment("client", "server").expect("get"),
        Impairment::NONE
    );
    assert!(
        lab.set_impairment("client", "nowhere", Impairment::NONE)
            .is_err()
    );
}

#[test]
fn labs_coexist_and_clean_up_on_drop_and_after_a_dead_owner() {
    let Some(_slot) = lab_slot() else { return };
    // A namespace named like a lab of a process that has exited.
    let mut child = std::process::Command::new("ip")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let dead_pid = child.id();
    child.wait().expect("wait");
    let stale = format!("cwl{dead_pid}x0-client");
    netns::create(&stale).expect("create a stale namespace");

    let a = two_namespaces(Impairment::NONE, Impairment::NONE);
    assert!(!netns::list().contains(&stale), "stale namespace survived");
    let b = two_namespaces(Impairment::NONE, Impairment::NONE);
    assert_ne!(a.id(), b.id());
    for lab in [&a, &b] {
        let listener = tcp_listener_in(lab, "server");
        tcp_connect_from(lab, "client", listener.local_addr().expect("addr"));
    }
    let names: Vec<String> = ["client", "server"]
        .iter()
        .map(|ns| a.netns_name(ns).expect("name").to_owned())
        .collect();
    assert!(names.iter().all(|n| netns::list().contains(n)));
    drop(a);
    let left = netns::list();
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "left behind: {left:?}"
    );
    assert!(left.contains(&b.netns_name("client").expect("name").to_owned()));
}

/// Goodput in bits per second of a bulk TCP transfer from `from` to `to` lasting
/// `warmup + run`, measured at the receiver over the part after `warmup`.
fn tcp_goodput(lab: &NetLab, from: &str, to: &str, warmup: Duration, run: Duration) -> f64 {
    let listener = tcp_listener_in(lab, to);
    let target = listener.local_addr().expect("addr");
    let receiver = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let start = Instant::now();
        let mut counted = 0u64;
        let mut window_start = None;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            if start.elapsed() >= warmup {
                window_start.get_or_insert_with(Instant::now);
                counted += n as u64;
            }
        }
        let window = window_start.map(|w| w.elapsed()).unwrap_or_default();
        counted as f64 * 8.0 / window.as_secs_f64()
    });
    let (mut stream, _) = tcp_connect_from(lab, from, target);
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    while start.elapsed() < warmup + run {
        stream.write_all(&chunk).expect("write");
    }
    drop(stream);
    receiver.join().expect("receiver")
}

#[test]
fn forwarder_carries_200_mbit_of_full_size_packets() {
    let Some(_slot) = lab_slot() else { return };
    let lab = two_namespaces(Impairment::NONE, Impairment::NONE);
    let goodput = tcp_goodput(
        &lab,
        "client",
        "server",
        Duration::ZERO,
        Duration::from_secs(3),
    );
    let stats = lab.stats("client", "server").expect("stats");
    let mean_packet = stats.forwarded_bytes / stats.forwarded_packets.max(1);
    eprintln!(
        "unimpaired goodput {:.0} Mbit/s, {} packets of {mean_packet} bytes on average",
        goodput / 1e6,
        stats.forwarded_packets
    );
    assert!(
        mean_packet > 1400,
        "packets were not full-size: {mean_packet}"
    );
    assert!(goodput > 200e6, "goodput {:.0} Mbit/s", goodput / 1e6);
}

#[test]
fn hundred_mbit_over_twenty_ms_is_not_held_back_by_the_forwarder() {
    let Some(_slot) = lab_slot() else { return };
    let rate = 100_000_000;
    // Queue of about one bandwidth-delay product, so TCP keeps the link busy.
    let lab = two_namespaces(
        Impairment::delay(10 * MS)
            .with_rate(rate)
            .with_queue_limit(300_000),
        Impairment::delay(10 * MS),
    );
    let goodput = tcp_goodput(
        &lab,
        "client",
        "server",
        Duration::from_secs(2),
        Duration::from_secs(4),
    );
    let ratio = goodput / rate as f64;
    let stats = lab.stats("client", "server").expect("stats");
    eprintln!(
        "goodput {:.1} Mbit/s ({ratio:.3} of the rate); {stats:?}",
        goodput / 1e6
    );
    assert!((0.85..=1.05).contains(&ratio), "goodput ratio {ratio}");
}
