; test-settings.scm - the dialog's schedule, model sampling and hires fix settings in a headless
; GIMP 2.10: run by tests/test-gimp.sh in a session of its own (SDG_NATIVE_SIZE=64: the tiny model
; makes its first pass at about 64x64). Defined before loading this file: sdg-model, tap-path (and
; the helpers of tests/gimp-lib.scm).
;
; None of them is a procedure argument: they are the dialog's settings, remembered with the last
; values (gimp_set_data: the plug-in's sdgp_params as bytes). This script sets them the way the
; dialog leaves them, by writing the fields into those bytes at the offsets plugin/params.c checks
; at build time (schedule: a 16-byte string at 10344; hires: a 32-bit flag at 10376; its upscale:
; an 8-byte string at 10400; the factor 2, strength 0.7 and steps 0 stay the defaults a call
; stores), then runs RUN-WITH-LAST-VALS (Filters > Repeat). Checked: the hires fix makes a layer
; of the region's size whose parasite records the first pass (72x64 for 256x192: the
; first pass's sides are at least 64) and the second
; (hires=144x128,...), Latent and Pixel; the schedule reaches the run (the parasite, and pictures
; other than the default schedule's); a procedure call runs neither; unknown names are refused.
; Not here: the dialog's controls (tests/test-dialog.sh).

(define proc "plug-in-diffusion-text-to-image")

(define (white-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img w h RGB-IMAGE "background" 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-drawable-fill l FILL-WHITE)
    (list img l)))

(define (layers img) (vector->list (cadr (gimp-image-get-layers img))))
; A run's layer goes directly above the source l, so the newest one is there.
(define (newest img l) (list-ref (layers img) (- (car (gimp-image-get-item-position img l)) 1)))
(define (parasite-of l)
  (catch "" (caddr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))
(define (records? l line) (string-contains (parasite-of l) (string-append "\n" line "\n")))
(define (size-of l) (list (car (gimp-drawable-width l)) (car (gimp-drawable-height l))))

; Pixels of a 6 x 6 grid over layer l.
(define (pixels l)
  (let loop ((i 0) (acc '()))
    (if (= i 36) acc
        (loop (+ i 1)
              (cons (vector->list (cadr (gimp-drawable-get-pixel l (* 40 (remainder i 6))
                                                                 (* 30 (quotient i 6)))))
                    acc)))))

(define (call img l)
  (catch #f (begin (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l "a red fox" "" sdg-model
                                                    "euler" 2 7.0 1 1 "")
                   #t)))
(define (repeat img l)
  (catch #f (begin (plug-in-diffusion-text-to-image RUN-WITH-LAST-VALS img l "" "" "" "" 0 0 0 0 "")
                   #t)))

; Writes bytes (a list of integers) into the remembered values at offset.
(define (remember-bytes offset bytes)
  (let* ((got (gimp-procedural-db-get-data proc)) (n (car got)) (data (cadr got)))
    (let loop ((i 0) (b bytes))
      (if (pair? b)
          (begin (vector-set! data (+ offset i) (car b)) (loop (+ i 1) (cdr b)))))
    (gimp-procedural-db-set-data proc n data)))
; A string field of size bytes, NUL-padded.
(define (remember-string offset size s)
  (remember-bytes offset
                  (let loop ((i 0) (acc '()))
                    (if (= i size) (reverse acc)
                        (loop (+ i 1) (cons (if (< i (string-length s))
                                                (char->integer (string-ref s i)) 0)
                                            acc))))))
(define (remember-schedule s) (remember-string 10344 16 s))
(define (remember-hires on) (remember-bytes 10376 (list (if on 1 0) 0 0 0)))
(define (remember-upscale s) (remember-string 10400 8 s))

(let* ((spec (white-image 256 192)) (img (car spec)) (l (cadr spec)))
  (ok (call img l) "a procedure call succeeds")
  (let ((called (newest img l)))
    (ok (and (records? called "schedule=default") (records? called "model_sampling=default")
             (not (string-contains (parasite-of called) "\nhires=")))
        "a call records schedule=default, model_sampling=default and no hires fix")

    (remember-hires #t)
    (remember-upscale "latent")
    (ok (repeat img l) "Repeat with the hires fix (Latent) remembered succeeds")
    (let ((latent (newest img l)))
      (ok (equal? (size-of latent) '(256 192)) "its layer has the region's size, 256x192")
      (ok (and (records? latent "width=72") (records? latent "height=64")
               (records? latent "hires=144x128,latent,0.7,0"))
          "its parasite records the first pass, 72x64, and hires=144x128,latent,0.7,0")
      (ok (not (equal? (pixels latent) (pixels called)))
          "the picture differs from the one without the hires fix")

      (remember-upscale "pixel")
      (ok (and (repeat img l) (equal? (size-of (newest img l)) '(256 192))
               (records? (newest img l) "hires=144x128,pixel,0.7,0"))
          "Repeat with Pixel: a 256x192 layer, hires=144x128,pixel,0.7,0")
      (ok (not (equal? (pixels (newest img l)) (pixels latent)))
          "the Pixel picture differs from the Latent one: the engine got the mode"))

    (remember-hires #f)
    (remember-schedule "trailing")
    (ok (and (repeat img l) (records? (newest img l) "schedule=trailing")
             (not (string-contains (parasite-of (newest img l)) "\nhires=")))
        "Repeat with the trailing schedule remembered: schedule=trailing, no hires fix")
    (ok (not (equal? (pixels (newest img l)) (pixels called)))
        "the trailing picture differs from the default schedule's: the engine got the setting")

    (ok (and (call img l) (records? (newest img l) "schedule=default")
             (equal? (pixels (newest img l)) (pixels called)))
        "a call runs the default schedule although trailing is remembered")

    (remember-schedule "bogus")
    (let ((before (layers img)))
      (ok (not (repeat img l)) "an unknown remembered schedule is refused")
      (ok (equal? (layers img) before) "and adds no layer"))
    (remember-schedule "default")
    (remember-hires #t)
    (remember-upscale "bicubic")
    (let ((before (layers img)))
      (ok (not (repeat img l)) "an unknown remembered hires upscale is refused")
      (ok (equal? (layers img) before) "and adds no layer")))
  (gimp-image-delete img))

(tap-finish)
