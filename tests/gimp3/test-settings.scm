; test-settings.scm - the dialog's schedule, model sampling and hires fix settings in a headless
; GIMP 3.0: run by tests/test-gimp3.sh in a session of its own (SDG_NATIVE_SIZE=64: the tiny model
; makes its first pass at about 64x64). Defined before loading this file: sdg-model, tap-path,
; last-path (the last values file of text to image that libgimp 3.0's begin_run reads for
; RUN-WITH-LAST-VALS) and the helpers of tests/gimp-lib.scm. The GIMP 3 port of
; tests/gimp/test-settings.scm.
;
; None of them is a procedure argument: they are auxiliary ones, the dialog's settings,
; remembered with the last values. This script writes those last values as the dialog leaves them
; ("a red fox", euler, 2 steps, CFG 7, seed 1, and the settings under test), then runs
; RUN-WITH-LAST-VALS (Filters > Repeat). Checked: the hires fix makes a layer of the region's size
; whose parasite records the first pass (72x64 for 256x192) and the second
; (hires=144x128,...), Latent and Pixel; the schedule reaches the run (the parasite, and pictures
; other than the default schedule's); a procedure call runs neither; unknown names are refused.
; Every call that may fail is inside catch: GIMP 3 stops at a failing batch command.
; Not here: the dialog's controls (tests/test-dialog.sh).

(define (white-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img "background" w h RGB-IMAGE 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-drawable-fill l FILL-WHITE)
    (list img l)))

(define (layers img) (vector->list (car (gimp-image-get-layers img))))
; A run's layer goes directly above the source l, so the newest one is there.
(define (newest img l) (list-ref (layers img) (- (car (gimp-image-get-item-position img l)) 1)))
(define (parasite-of l)
  (catch "" (caddr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))
(define (records? l line) (string-contains (parasite-of l) (string-append "\n" line "\n")))
(define (size-of l) (list (car (gimp-drawable-get-width l)) (car (gimp-drawable-get-height l))))

; Pixels of a 6 x 6 grid over layer l.
(define (pixels l)
  (let loop ((i 0) (acc '()))
    (if (= i 36) acc
        (loop (+ i 1)
              (cons (car (gimp-drawable-get-pixel l (* 40 (remainder i 6)) (* 30 (quotient i 6))))
                    acc)))))

(define (call img l)
  (catch #f
    (begin
      (plug-in-diffusion-text-to-image
        #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector l)
        #:prompt "a red fox" #:negative-prompt "" #:model sdg-model #:sampler "euler"
        #:steps 2 #:cfg-scale 7.0 #:seed 1 #:batch-count 1 #:loras "")
      #t)))
(define (repeat img l)
  (catch #f (begin (plug-in-diffusion-text-to-image #:run-mode RUN-WITH-LAST-VALS #:image img
                                                    #:drawables (vector l))
                   #t)))

(define (q s) (string-append "\"" s "\""))
; The last values the dialog leaves with this schedule and hires fix (on, and its upscale).
(define (remember schedule hires upscale)
  (let ((port (open-output-file last-path)))
    (display (string-append
               "# settings\n\n(prompt \"a red fox\")\n(negative-prompt \"\")\n(model " (q sdg-model)
               ")\n(sampler \"euler\")\n(steps 2)\n(cfg-scale 7)\n(seed 1)\n(batch-count 1)\n"
               "(random-seed no)\n(schedule " (q schedule) ")\n(hires " (if hires "yes" "no")
               ")\n(hires-upscale " (q upscale) ")\n\n# end of settings\n")
             port)
    (close-output-port port)))

(let* ((spec (white-image 256 192)) (img (car spec)) (l (cadr spec)))
  (ok (call img l) "a procedure call succeeds")
  (let ((called (newest img l)))
    (ok (and (records? called "schedule=default") (records? called "model_sampling=default")
             (not (string-contains (parasite-of called) "\nhires=")))
        "a call records schedule=default, model_sampling=default and no hires fix")

    (remember "default" #t "latent")
    (ok (repeat img l) "Repeat with the hires fix (Latent) remembered succeeds")
    (let ((latent (newest img l)))
      (ok (equal? (size-of latent) '(256 192)) "its layer has the region's size, 256x192")
      (ok (and (records? latent "width=72") (records? latent "height=64")
               (records? latent "hires=144x128,latent,0.7,0"))
          "its parasite records the first pass, 72x64, and hires=144x128,latent,0.7,0")
      (ok (not (equal? (pixels latent) (pixels called)))
          "the picture differs from the one without the hires fix")

      (remember "default" #t "pixel")
      (ok (and (repeat img l) (equal? (size-of (newest img l)) '(256 192))
               (records? (newest img l) "hires=144x128,pixel,0.7,0"))
          "Repeat with Pixel: a 256x192 layer, hires=144x128,pixel,0.7,0")
      (ok (not (equal? (pixels (newest img l)) (pixels latent)))
          "the Pixel picture differs from the Latent one: the engine got the mode"))

    (remember "trailing" #f "latent")
    (ok (and (repeat img l) (records? (newest img l) "schedule=trailing")
             (not (string-contains (parasite-of (newest img l)) "\nhires=")))
        "Repeat with the trailing schedule remembered: schedule=trailing, no hires fix")
    (ok (not (equal? (pixels (newest img l)) (pixels called)))
        "the trailing picture differs from the default schedule's: the engine got the setting")

    (remember "trailing" #f "latent")
    (ok (and (call img l) (records? (newest img l) "schedule=default")
             (equal? (pixels (newest img l)) (pixels called)))
        "a call runs the default schedule although trailing is remembered")

    (remember "bogus" #f "latent")
    (let ((before (layers img)))
      (ok (not (repeat img l)) "an unknown remembered schedule is refused")
      (ok (equal? (layers img) before) "and adds no layer"))
    (remember "default" #t "bicubic")
    (let ((before (layers img)))
      (ok (not (repeat img l)) "an unknown remembered hires upscale is refused")
      (ok (equal? (layers img) before) "and adds no layer")))
  (gimp-image-delete img))

(tap-finish)
