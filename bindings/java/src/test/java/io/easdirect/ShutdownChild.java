package io.easdirect;

import java.util.concurrent.CountDownLatch;

/** Run by ShutdownTest in a JVM of its own: exits while a listener is running. */
public final class ShutdownChild {
    public static void main(String[] args) throws Exception {
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
}
