-- detectq 0005: the API's hard cases (CONTRACT section 6), first part: producer input the API would refuse
-- is refused at the INSERT, and each track keeps its own verdict.

-- The API refuses a media_url that is not https. Requests still waiting with such a URL could only fail
-- there; they are cancelled here, with the reason, so that the new rule holds for every row that can still
-- change. Finished rows are not scanned again (NOT VALID): the rule applies to every row written from now on.
SELECT set_config('detectq.event_detail', 'cancelled by migration 0005: media_url must be an https:// URL, which the API requires', true);
UPDATE detectq.requests
SET state = 'cancelled', locked_by = NULL, locked_until = NULL,
    error_message = 'media_url must be an https:// URL, which the API requires (cancelled by migration 0005)'
WHERE media_url !~* '^https://' AND state IN ('queued', 'submitting', 'awaiting_result', 'retrying');
SELECT set_config('detectq.event_detail', '', true);

-- (A blank URL is left to requests_media_url_not_blank, so the error names the rule that was broken.)
ALTER TABLE detectq.requests
    ADD CONSTRAINT requests_media_url_https CHECK (media_url ~* '^https://' OR btrim(media_url) = '') NOT VALID;

-- Each track's own label as the API gave it: the audio track's (`metrics`), and the picture's
-- (`video_metrics` for a video, `image_metrics` for an image). `label` and `is_fake` are the request's verdict:
-- fake when any track reads fake.
ALTER TABLE detectq.requests
    ADD COLUMN audio_label  text,
    ADD COLUMN visual_label text;

COMMENT ON COLUMN detectq.requests.audio_label IS 'The audio track''s label (metrics.label), as the API gave it.';
COMMENT ON COLUMN detectq.requests.visual_label IS 'The picture''s label (video_metrics or image_metrics), as the API gave it.';
