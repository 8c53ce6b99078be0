//! Property tests: parsers that see user input never panic, whatever the
//! input, and what they accept behaves (an accepted image reference keeps its
//! text; a rejected create body is a validation error, not a crash).

use prewarm::domain::image_ref::ImageRef;
use prewarm::domain::schedule::CronSchedule;
use prewarm::domain::task::TaskSpec;
use prewarm::domain::webhook_target::{is_private, literal_ip};
use prewarm::http::auth::parse_token_file;
use prewarm_api::CreateTaskRequest;
use proptest::prelude::*;

/// Strings built from the characters image references are made of, plus a few that break them.
fn image_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "[a-zA-Z0-9._:/@+\\-]{0,40}(:[0-9]{0,6})?(@sha256:[0-9a-f]{0,70})?[ \\t\\u{0}é]{0,2}",
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn image_references_never_panic(s in image_like()) {
        if let Ok(r) = ImageRef::parse(&s) {
            prop_assert_eq!(r.as_str(), s.as_str());
            let _ = (r.normalized(), r.normalized_name(), r.domain(), r.tag(), r.digest());
        }
    }

    #[test]
    fn arbitrary_unicode_image_references_never_panic(s in any::<String>()) {
        let _ = ImageRef::parse(&s);
    }

    #[test]
    fn create_bodies_never_panic(
        images in proptest::collection::vec(image_like(), 0..4),
        batch in proptest::option::of(any::<u32>()),
        priority in proptest::option::of(any::<i32>()),
        url in proptest::option::of("(https?|ftp)://[a-z0-9.\\[\\]:@]{0,30}(/[a-z]{0,5})?"),
        key in "[a-zA-Z0-9./_-]{0,70}",
        value in "[a-zA-Z0-9._-]{0,70}",
    ) {
        let req = CreateTaskRequest {
            images,
            batch_size: batch,
            priority,
            webhook_url: url.clone(),
            node_selector: Some([(key, value)].into_iter().collect()),
            ..Default::default()
        };
        let _ = TaskSpec::from_request(req);
        if let Some(u) = url {
            if let Some(ip) = literal_ip(&u) {
                let _ = is_private(ip);
            }
        }
    }

    #[test]
    fn cron_expressions_never_panic(
        expr in "(@[a-z]{0,8}|([0-9*/,\\-LW#?A-Za-z]{0,6} ?){0,7})",
        tz in "(UTC|Europe/Berlin|America/New_York|Asia/Kolkata|[A-Za-z/_+-]{0,20})",
        secs in 0i64..4_102_444_800,
    ) {
        let now = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        if let Ok(cron) = CronSchedule::parse(&expr, &tz, now) {
            if let Some(next) = cron.next_fire_after(now) {
                prop_assert!(next > now, "{expr} {tz}: {next} not after {now}");
            }
            let _ = cron.due_between(now, now + chrono::Duration::days(400));
        }
    }

    #[test]
    fn token_files_never_panic(s in "([a-z# ]{0,8} (admin|viewer|root)? (sha256:)?[0-9a-fz]{0,66}\\n?){0,4}") {
        let _ = parse_token_file(&s);
    }
}
