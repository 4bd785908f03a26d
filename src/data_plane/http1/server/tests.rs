use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn parsed(head: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(head.as_bytes());
    let parsed = parse(&mut buf, 100);
    (parsed, buf)
}

#[test]
fn a_bodiless_request_is_taken_off_the_buffer_and_what_follows_stays() {
    let (parsed, rest) =
        parsed("GET /a?b=1 HTTP/1.1\r\nHost: t\r\nX-One: 1\r\nx-one: 2\r\n\r\nGET /next");
    let Parsed::Request(req, keep_alive) = parsed else {
        panic!("{parsed:?}");
    };
    assert!(keep_alive);
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers()["host"], "t");
    let ones: Vec<_> = req.headers().get_all("x-one").iter().collect();
    assert_eq!(ones, ["1", "2"]);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn connection_close_anywhere_in_the_list_ends_the_connection() {
    for close in [
        "Connection: close",
        "connection: keep-alive, CLOSE",
        "Connection: keep-alive\r\nConnection: Close",
    ] {
        let (parsed, _) = parsed(&format!("GET / HTTP/1.1\r\nHost: t\r\n{close}\r\n\r\n"));
        assert!(
            matches!(parsed, Parsed::Request(_, false)),
            "{close}: {parsed:?}"
        );
    }
    let (parsed, _) = parsed("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
    assert!(matches!(parsed, Parsed::Request(_, true)), "{parsed:?}");
}

#[test]
fn heads_with_more_fields_than_the_stack_holds_parse_the_same() {
    let fields: String = (0..40).map(|i| format!("X-F{i}: v{i}\r\n")).collect();
    let (parsed, rest) = parsed(&format!("GET / HTTP/1.1\r\n{fields}\r\n"));
    let Parsed::Request(req, _) = parsed else {
        panic!("{parsed:?}");
    };
    assert!(rest.is_empty());
    assert_eq!(req.headers().len(), 40);
    assert_eq!(req.headers()["x-f39"], "v39");
}

#[test]
fn anything_but_a_plain_bodiless_http_1_1_request_is_left_for_hyper() {
    let many: String = (0..21).map(|i| format!("X-F{i}: v\r\n")).collect();
    for head in [
        "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi".to_owned(),
        "GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n".to_owned(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
        "GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n".to_owned(),
        "GET / HTTP/1.0\r\n\r\n".to_owned(),
        "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n".to_owned(),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nX: a\u{1}b\r\n\r\n".to_owned(),
        format!("GET / HTTP/1.1\r\n{many}\r\n"),
    ] {
        let mut buf = BytesMut::from(head.as_bytes());
        let parsed = parse(&mut buf, 20);
        assert!(matches!(parsed, Parsed::Other), "{head:?}: {parsed:?}");
        assert_eq!(&buf[..], head.as_bytes(), "left whole for hyper");
    }
}

#[test]
fn partial_heads_wait_and_stay_in_the_buffer() {
    for head in ["G", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: t\r\n"] {
        let (parsed, rest) = parsed(head);
        assert!(matches!(parsed, Parsed::Partial), "{head:?}: {parsed:?}");
        assert_eq!(&rest[..], head.as_bytes());
    }
}

#[test]
fn a_few_leading_empty_lines_are_ignored_and_more_are_bad() {
    for lead in ["\r\n", "\n", "\r\n\n\r\n\r\n"] {
        let (parsed, rest) = parsed(&format!("{lead}PUT /x HTTP/1.1\r\nHost: t\r\n\r\n"));
        let Parsed::Request(req, _) = parsed else {
            panic!("{lead:?}: {parsed:?}");
        };
        assert_eq!(req.method(), Method::PUT, "{lead:?}");
        assert_eq!(req.uri(), "/x");
        assert!(rest.is_empty());
    }
    for waiting in ["\r\n", "\r\n\r", "\n\n"] {
        let (parsed, rest) = parsed(waiting);
        assert!(matches!(parsed, Parsed::Partial), "{waiting:?}: {parsed:?}");
        assert_eq!(&rest[..], waiting.as_bytes());
    }
    let (parsed, _) = parsed("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(matches!(parsed, Parsed::Bad), "{parsed:?}");
}

#[test]
fn a_target_the_uri_parser_refuses_is_bad() {
    let (parsed, _) = parsed("GET http://[::1 HTTP/1.1\r\n\r\n");
    assert!(matches!(parsed, Parsed::Bad), "{parsed:?}");
}

fn head_of(
    resp: Response<()>,
    hint: Option<u64>,
    bodiless: bool,
    keep_alive: bool,
) -> (String, Head) {
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let answer = Answer {
        status: parts.status,
        headers: &parts.headers,
        raw: None,
        hint,
        bodiless,
    };
    let head = encode_head(&mut out, &answer, keep_alive);
    (String::from_utf8(out).expect("ascii"), head)
}

#[test]
fn no_content_and_not_modified_carry_no_length_and_unknown_codes_no_reason() {
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let resp = Response::builder()
            .status(status)
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (text, head) = head_of(resp, None, true, true);
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(head.framing, Framing::None);
    }
    // HEAD keeps the length the GET would have had.
    let resp = Response::builder()
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (text, _) = head_of(resp, None, true, true);
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    let resp = Response::builder().status(599).body(()).unwrap();
    let (text, _) = head_of(resp, Some(0), false, true);
    assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
}

#[test]
fn answers_are_framed_by_length_when_known_else_chunked() {
    let (text, head) = head_of(Response::new(()), Some(5), false, true);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.keep_alive);

    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    let (text, head) = head_of(resp, None, false, true);
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(!text.contains("gzip"), "the gateway frames: {text}");
    assert_eq!(head.framing, Framing::Chunked);

    // The handler's own length is kept (a HEAD answer's too), and never doubled.
    let mut resp = Response::new(());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    let (text, head) = head_of(resp, None, true, true);
    assert_eq!(text.matches("content-length").count(), 1, "{text}");
    assert!(text.contains("content-length: 42\r\n"), "{text}");
    assert_eq!(head.framing, Framing::None);
    let mut resp = Response::new(());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    let (text, head) = head_of(resp, Some(42), false, true);
    assert_eq!(text.matches("content-length").count(), 1, "{text}");
    assert_eq!(head.framing, Framing::Length(42));

    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let (text, head) = head_of(resp, Some(0), true, true);
    assert!(!text.contains("content-length"), "{text}");
    assert_eq!(head.framing, Framing::None);
}

#[test]
fn a_backends_raw_fields_come_first_with_its_length_and_date() {
    let raw = RawFields::of_head(
        b"HTTP/1.1 200 OK\r\nDate: then\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX-Up: 1\r\n\r\n",
    );
    let mut resp = Response::new(());
    resp.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("pool=a"));
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let answer = Answer {
        status: parts.status,
        headers: &parts.headers,
        raw: Some(&raw),
        hint: Some(3),
        bodiless: false,
    };
    let head = encode_head(&mut out, &answer, true);
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "HTTP/1.1 200 OK\r\ndate: then\r\nx-up: 1\r\ncontent-length: 3\r\nset-cookie: pool=a\r\n\r\n"
    );
    assert_eq!(head.framing, Framing::Length(3));
}

#[test]
fn closing_is_said_once_and_a_date_of_the_handlers_is_kept() {
    let (text, head) = head_of(Response::new(()), Some(0), false, false);
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(!head.keep_alive);

    let mut resp = Response::new(());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp.headers_mut()
        .insert(header::DATE, HeaderValue::from_static("yesterday"));
    let (text, head) = head_of(resp, Some(0), false, false);
    assert_eq!(text.matches("connection").count(), 1, "{text}");
    assert_eq!(text.matches("date").count(), 1, "{text}");
    assert!(text.contains("date: yesterday\r\n"), "{text}");
    assert!(!head.keep_alive, "the answer asked to close");
}

#[test]
fn chunk_sizes_are_lowercase_hex() {
    for (len, text) in [
        (1, "1"),
        (15, "f"),
        (16, "10"),
        (255, "ff"),
        (4096, "1000"),
        (0x1_0000, "10000"),
    ] {
        let mut out = Vec::new();
        write_chunk_size(&mut out, len);
        assert_eq!(out, format!("{text}\r\n").into_bytes(), "{len}");
    }
}

/// A body fed through a channel: its length is unknown, so the answer is chunked.
struct Fed(mpsc::Receiver<Bytes>);

impl AnswerBody for Fed {}
impl AnswerBody for Full<Bytes> {}

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

const SETTINGS: Settings = Settings {
    header_read_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(5),
    max_head_bytes: 8192,
    max_headers: 100,
};

/// Serves one accepted connection with `handle` on a task; returns the client's
/// stream and the task (which yields how the loop ended).
async fn served<H, F, B>(
    settings: Settings,
    drain: (Arc<AtomicBool>, CancellationToken),
    handle: H,
) -> (TcpStream, tokio::task::JoinHandle<Outcome>)
where
    H: Fn(Request<Option<Incoming>>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send,
    B: AnswerBody + Send,
    B::Error: std::fmt::Display + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (io, _) = listener.accept().await.expect("accept");
    let task = tokio::spawn(async move {
        let (started, token) = drain;
        let drain = Drain {
            started: &started,
            token: &token,
        };
        serve(io, handle, settings, drain).await
    });
    (client, task)
}

fn no_drain() -> (Arc<AtomicBool>, CancellationToken) {
    (Arc::new(AtomicBool::new(false)), CancellationToken::new())
}

fn echo_path(req: Request<Option<Incoming>>) -> impl Future<Output = Response<Full<Bytes>>> {
    let path = req.uri().path().to_owned();
    async move { Response::new(Full::new(Bytes::from(path))) }
}

/// Sends `GET path` on `client`.
async fn send_get(client: &mut TcpStream, path: &str) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    client.write_all(head.as_bytes()).await.expect("write");
}

/// Reads until `until` has arrived (or the peer closed).
async fn read_text(client: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(until) {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("bounded");
    String::from_utf8(got).expect("ascii")
}

async fn closed(client: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut client, task) = served(SETTINGS, no_drain(), echo_path).await;
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let text = read_text(&mut client, "/two").await;
    let one = text.find("/one").expect("first answer");
    let two = text.find("/two").expect("second answer");
    assert!(one < two, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    // Still open: a third request is served too.
    client
        .write_all(b"GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let text = read_text(&mut client, "/three").await;
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(closed(&mut client).await);
    assert!(matches!(task.await.expect("task"), Outcome::Done));
}

#[tokio::test]
async fn a_request_with_a_body_hands_the_connection_over_with_every_byte() {
    let (mut client, task) = served(SETTINGS, no_drain(), echo_path).await;
    let post = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
    send_get(&mut client, "/first").await;
    read_text(&mut client, "/first").await;
    client.write_all(post).await.expect("write");
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("bounded")
        .expect("task");
    let Outcome::HandOff(_, read) = outcome else {
        panic!("{outcome:?}");
    };
    // The whole request may not have arrived in one read; what did is its start.
    assert!(post.starts_with(&read), "{read:?}");
    assert!(read.starts_with(b"POST /p"), "{read:?}");
}

#[tokio::test]
async fn unknown_lengths_are_chunked_and_sent_as_they_come() {
    let (feed, fed) = mpsc::channel(4);
    let fed = std::sync::Mutex::new(Some(fed));
    let (mut client, _task) = served(SETTINGS, no_drain(), move |_req| {
        let body = fed.lock().expect("lock").take().expect("one request");
        async move { Response::new(Fed(body)) }
    })
    .await;
    send_get(&mut client, "/").await;
    feed.send(Bytes::from_static(b"first")).await.expect("feed");
    let text = read_text(&mut client, "first\r\n").await;
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n5\r\nfirst\r\n"), "{text:?}");
    feed.send(Bytes::from(vec![b'x'; 20_000]))
        .await
        .expect("feed");
    drop(feed);
    let text = read_text(&mut client, "0\r\n\r\n").await;
    assert!(text.starts_with("4e20\r\nxxx"), "{:?}", &text[..10]);
    assert!(text.ends_with("x\r\n0\r\n\r\n"), "the last chunk ends it");
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_cancels_it() {
    let dropped = Arc::new(AtomicUsize::new(0));
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let counter = Arc::clone(&dropped);
    let (mut client, task) = served(SETTINGS, no_drain(), move |_req| {
        let guard = CountDrop(Arc::clone(&counter));
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    send_get(&mut client, "/").await;
    client.shutdown().await.expect("half-close");
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the loop notices the client left")
        .expect("task");
    assert!(matches!(outcome, Outcome::Done));
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the request was dropped");
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout_and_slow_heads_after_the_head_timeout() {
    let settings = Settings {
        idle_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_secs(3),
        ..SETTINGS
    };
    let (mut client, _task) = served(settings, no_drain(), echo_path).await;
    send_get(&mut client, "/a").await;
    read_text(&mut client, "/a").await;
    let quiet = tokio::time::Instant::now();
    assert!(closed(&mut client).await);
    let took = quiet.elapsed();
    assert!(took < Duration::from_secs(2), "idle for {took:?}");

    let settings = Settings {
        idle_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_millis(200),
        ..SETTINGS
    };
    let (mut client, _task) = served(settings, no_drain(), echo_path).await;
    // Longer than the head timeout, but idle between requests is fine.
    send_get(&mut client, "/a").await;
    read_text(&mut client, "/a").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .write_all(b"GET /b HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let began = tokio::time::Instant::now();
    assert!(closed(&mut client).await, "an unfinished head is cut");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
}

#[tokio::test]
async fn a_drain_closes_waiting_connections_and_says_close_on_the_last_answer() {
    let (started, token) = no_drain();
    let drain = (Arc::clone(&started), token.clone());
    let (mut waiting, task) = served(SETTINGS, drain.clone(), echo_path).await;
    let (gate, gated) = tokio::sync::oneshot::channel::<()>();
    let gated = std::sync::Mutex::new(Some(gated));
    let (called, mut was_called) = mpsc::unbounded_channel();
    let (mut busy, _busy_task) = served(SETTINGS, drain, move |_req| {
        let gated = gated.lock().expect("lock").take();
        let _ = called.send(());
        async move {
            if let Some(gated) = gated {
                let _ = gated.await;
            }
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await;
    send_get(&mut busy, "/").await;
    tokio::time::timeout(WAIT, was_called.recv())
        .await
        .expect("bounded")
        .expect("the request is in flight");
    started.store(true, Ordering::Release);
    token.cancel();
    assert!(closed(&mut waiting).await, "the waiting connection closed");
    assert!(matches!(task.await.expect("task"), Outcome::Done));
    let _ = gate.send(());
    let text = read_text(&mut busy, "done").await;
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(closed(&mut busy).await);
}

#[tokio::test]
async fn a_connection_idle_past_its_busy_spell_is_still_served() {
    let (mut client, _task) = served(SETTINGS, no_drain(), echo_path).await;
    send_get(&mut client, "/before").await;
    read_text(&mut client, "/before").await;
    tokio::time::sleep(BUSY_IDLE + Duration::from_millis(300)).await;
    send_get(&mut client, "/after").await;
    let text = read_text(&mut client, "/after").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
}
