//! The `causeway-linkem` binary: one JSON line describing the lab, commands on stdin, and
//! cleanup on stdin EOF or SIGTERM. Needs root (CI runs as root); elsewhere it skips.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use causeway_linkem::netns;
use serde_json::Value;

fn can_build_labs() -> bool {
    let ok = nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/net/tun").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the linkem tests as root"
        );
        eprintln!("skipped: needs root and /dev/net/tun");
    }
    ok
}

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    description: Value,
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_causeway-linkem"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn causeway-linkem");
    let stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let description = read_json(&mut stdout);
    Running {
        child,
        stdin,
        stdout,
        description,
    }
}

fn read_json(out: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).expect("read a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

impl Running {
    fn ask(&mut self, command: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write command");
        read_json(&mut self.stdout)
    }

    fn netns(&self) -> Vec<String> {
        self.description["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|n| n["netns"].as_str().expect("netns").to_owned())
            .collect()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "causeway-linkem did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn link<'a>(description: &'a Value, from: &str, to: &str) -> &'a Value {
    description["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["from"] == from && l["to"] == to)
        .unwrap_or_else(|| panic!("no link {from}>{to} in {description}"))
}

fn udp_rtt(
    client_netns: &str,
    client: SocketAddr,
    server_netns: &str,
    server: SocketAddr,
) -> Duration {
    let echo = netns::enter(server_netns, || UdpSocket::bind(server))
        .expect("enter")
        .expect("bind");
    let client = netns::enter(client_netns, || UdpSocket::bind(client))
        .expect("enter")
        .expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    echo.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut rtts = Vec::new();
    let mut buf = [0u8; 16];
    for _ in 0..9 {
        let start = Instant::now();
        client.send_to(b"ping", server).expect("send");
        let (n, from) = echo.recv_from(&mut buf).expect("request lost");
        echo.send_to(&buf[..n], from).expect("echo");
        client.recv_from(&mut buf).expect("reply lost");
        rtts.push(start.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[test]
fn describes_the_lab_takes_commands_and_cleans_up_on_eof() {
    if !can_build_labs() {
        return;
    }
    let mut lab = start(&[
        "--ns",
        "client,back",
        "--link",
        "client:back=delay=10ms",
        "--seed",
        "3",
    ]);
    let d = lab.description.clone();
    assert!(d["lab"].as_str().expect("lab").starts_with("cwl"));
    assert_eq!(d["namespaces"][0]["name"], "client");
    assert_eq!(d["namespaces"][1]["name"], "back");
    let address = |i: usize| -> std::net::Ipv4Addr {
        d["namespaces"][i]["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("IPv4")
    };
    let (client, back) = (address(0), address(1));
    assert!(back.is_loopback());
    assert_eq!(link(&d, "client", "back")["delay_ms"], 10.0);
    assert_eq!(link(&d, "back", "client")["delay_ms"], 10.0);
    let names = lab.netns();
    assert!(names.iter().all(|n| netns::list().contains(n)));

    let changed = lab.ask("client>back=delay=25ms,loss=0%");
    assert_eq!(changed["ok"], true, "{changed}");
    assert_eq!(link(&changed, "client", "back")["delay_ms"], 25.0);
    assert_eq!(link(&changed, "back", "client")["delay_ms"], 10.0);
    let rtt = udp_rtt(
        &names[0],
        SocketAddr::from((client, 0)),
        &names[1],
        SocketAddr::from((back, 9100)),
    );
    eprintln!("RTT through the binary's lab: {rtt:?}");
    assert!(
        rtt >= Duration::from_millis(34) && rtt < Duration::from_millis(42),
        "{rtt:?}"
    );

    let refused = lab.ask("client>nowhere=delay=1ms");
    assert_eq!(refused["ok"], false, "{refused}");
    let stats = lab.ask("stats");
    assert_eq!(stats["ok"], true, "{stats}");
    assert!(
        stats["stats"][0]["stats"]["forwarded_packets"]
            .as_u64()
            .expect("count")
            >= 9
    );

    drop(lab.stdin.take());
    assert!(lab.wait_exit().success());
    let left = netns::list();
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "left behind: {left:?}"
    );
}

#[test]
fn sigterm_cleans_up() {
    if !can_build_labs() {
        return;
    }
    let mut lab = start(&["--ns", "a,b,c", "--no-stdin"]);
    let names = lab.netns();
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| netns::list().contains(n)));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(lab.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(lab.wait_exit().success());
    let left = netns::list();
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "left behind: {left:?}"
    );
}

#[test]
fn bad_flags_fail_before_creating_anything() {
    let out = Command::new(env!("CARGO_BIN_EXE_causeway-linkem"))
        .args(["--ns", "a,b", "--link", "a:b=delay=fast"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));
}
