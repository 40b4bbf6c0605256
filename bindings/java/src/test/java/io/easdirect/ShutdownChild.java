package io.easdirect;

import java.util.concurrent.CountDownLatch;

/**
 * Run by ShutdownTest in a JVM of its own: exits while a listener is running, or with the
 * argument "source" while a source's fetch is running.
 */
public final class ShutdownChild {
    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("source")) {
            source();
            return;
        }
        CountDownLatch started = new CountDownLatch(1);
        EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2");
        c.subscribe(list -> {
            System.out.println("callback started");
            System.out.flush();
            started.countDown();
            try {
                Thread.sleep(500);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            System.out.println("callback returned");
            System.out.flush();
        });
        started.await();
        System.out.println("exiting");
        System.out.flush();
        System.exit(0);
    }

    private static void source() throws Exception {
        CountDownLatch started = new CountDownLatch(1);
        java.util.concurrent.atomic.AtomicInteger calls = new java.util.concurrent.atomic.AtomicInteger();
        EasClient c = EasClient.fromSource(() -> {
            if (calls.incrementAndGet() == 2) {
                System.out.println("fetch started");
                System.out.flush();
                started.countDown();
                Thread.sleep(500);
                System.out.println("fetch returned");
                System.out.flush();
            }
            return java.util.Collections.singletonList(Endpoint.of("127.0.0.1", 1));
        }, java.util.Collections.singletonMap("refresh_interval_ms", "10"));
        started.await();
        System.out.println("exiting " + c.select().port());
        System.out.flush();
        System.exit(0);
    }
}
